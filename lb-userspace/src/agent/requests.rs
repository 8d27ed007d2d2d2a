//! The API's requests the loop answers at once (`lb reload`, `lb real`,
//! `lb ha`, `lb cluster` and the views).
use anyhow::{Context, Result, bail};
use log::info;

use super::{Agent, real_name};
use crate::{
    api::{self, HaAction, NodeRole, RealAction, Request, Response},
    config::AdminState,
};

impl Agent {
    pub(super) fn handle(&mut self, req: Request) -> Response {
        let message = |m: Result<String>| match m {
            Ok(message) => Response::ok(&api::Message { message }),
            Err(e) => Response::err(format!("{e:#}")),
        };
        match req {
            Request::Reload => message(self.reload()),
            Request::Status => Response::ok(&self.status()),
            Request::Vips => Response::ok(&self.vips()),
            Request::Stats => Response::ok(&self.stats()),
            Request::Live => Response::ok(&self.live_status()),
            // Served off the loop by `clear_flows`.
            Request::FlowsClear { .. } => Response::err("flows clear: not served here"),
            // Ends the loop: served there.
            Request::Teardown => Response::err("teardown: not served here"),
            // Streams: served there.
            Request::Trace(_) => Response::err("trace: not served here"),
            Request::Ha { action } => self.ha_action(action),
            Request::Cluster { action } => match self.cluster.as_mut() {
                None => {
                    Response::err("no `cluster:` section in the config; this node runs on its own")
                }
                Some(c) => {
                    let message = c.act(action, self.ctl.programmed());
                    Response::ok(&api::ClusterAnswer {
                        message: (!message.is_empty()).then_some(message),
                        status: c.status(),
                    })
                }
            },
            Request::Reals { farm } => Response::ok(&self.reals(farm.as_deref())),
            Request::Real { action, farm, real } => message(self.admin(action, &farm, &real)),
        }
    }

    /// `lb ha ACTION`.
    fn ha_action(&mut self, action: HaAction) -> Response {
        let Some(h) = self.ha.as_mut() else {
            return match action {
                HaAction::Status => Response::ok(&api::RoleChange {
                    role: NodeRole::Standalone,
                    message: "no `ha:` section in the config; this node runs standalone".into(),
                }),
                _ => Response::err(
                    "no `ha:` section in the config; this node runs standalone, with no role to take over or release",
                ),
            };
        };
        let changed = match action {
            HaAction::Status => return Response::ok(&api::HaAnswer::Status(Box::new(h.status()))),
            HaAction::Takeover => h.takeover().context("takeover refused"),
            HaAction::Release => h.release().context("release refused"),
        };
        match changed {
            Ok(message) => Response::ok(&api::RoleChange {
                role: h.role().into(),
                message,
            }),
            Err(e) => Response::err(format!("{e:#}")),
        }
    }

    /// `lb real enable|disable|drain FARM ADDR[:PORT]`.
    fn admin(&mut self, action: RealAction, farm: &str, real: &str) -> Result<String> {
        let state = match action {
            RealAction::Enable => AdminState::Up,
            RealAction::Disable => AdminState::Disabled,
            RealAction::Drain => AdminState::Drain,
        };
        let action = action.as_str();
        let Some((addr, port)) = crate::endpoint::parse(real) else {
            bail!(
                "{real}: not a real's address (ADDR or ADDR:PORT, IPv6 with a port as [ADDR]:PORT)"
            );
        };
        let keys = self
            .ctl
            .set_admin(farm, addr, port, state, &mut self.dp.maps)?;
        let names: Vec<String> = keys.iter().map(real_name).collect();
        info!("admin: {action} {}", names.join(", "));
        if state == AdminState::Disabled {
            self.fail_action(&keys);
        }
        Ok(format!("{action}: {}", names.join(", ")))
    }
}
