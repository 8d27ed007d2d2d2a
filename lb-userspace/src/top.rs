//! `lb top`: the live view in a terminal, one frame a second, until `q`.
//! `--once` prints one frame (or with `--json` the [`Status`]) for scripts.
//!
//! The frame is [`live::render`]; the agent answers [`Request::Live`] on its
//! API socket, the rates already computed (see [`crate::live`]).
use std::{
    io::{IsTerminal, Write},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    api::{self, Request, live::Status},
    live,
};

/// How often the frame is redrawn.
const REFRESH: Duration = Duration::from_secs(1);
/// The width when stdout is not a terminal.
const DEFAULT_WIDTH: usize = 160;

/// Asks the agent on `socket` for the live view.
pub fn fetch(socket: &Path) -> Result<Status> {
    api::ask(socket, &Request::Live, Duration::from_secs(5))
}

/// One frame (or the JSON) on stdout.
pub fn once(socket: &Path, json: bool) -> Result<()> {
    let st = fetch(socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", live::render(&st, size().0));
    }
    Ok(())
}

/// Redraws every [`REFRESH`] until `q` (or Ctrl-C) is typed.
pub fn run(socket: &Path) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("lb top reads its keys from a terminal; use `lb top --once` in scripts");
    }
    let _raw = RawMode::enter()?;
    let mut out = std::io::stdout();
    // Hide the cursor while drawing; RawMode's drop shows it again.
    write!(out, "\x1b[?25l")?;
    loop {
        let (cols, rows) = size();
        let frame = match fetch(socket) {
            Ok(st) => live::render(&st, cols),
            Err(e) => format!("lb top: {e:#}\n(retrying every second; q quits)\n"),
        };
        // As many lines as the terminal holds (the busiest rows come
        // first): a longer frame would scroll its head away.
        let shown: Vec<&str> = frame
            .lines()
            .take(rows.unwrap_or(usize::MAX).saturating_sub(1))
            .collect();
        // Home, the frame, then clear what the previous one left below.
        write!(out, "\x1b[H{}\x1b[K\n\x1b[J", shown.join("\x1b[K\n"))?;
        out.flush()?;
        if quit_typed(REFRESH)? {
            return Ok(());
        }
    }
}

/// Waits up to `within` for a key; true for `q`, `Q` or Ctrl-C.
fn quit_typed(within: Duration) -> Result<bool> {
    let mut fds = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(within.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fds, 1, ms) };
    if n <= 0 {
        return Ok(false);
    }
    let mut buf = [0u8; 16];
    // SAFETY: reads at most buf.len() bytes into buf.
    let got = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
    if got == 0 {
        // The terminal went away.
        return Ok(true);
    }
    let got = usize::try_from(got).unwrap_or(0);
    Ok(buf[..got].iter().any(|b| matches!(b, b'q' | b'Q' | 3)))
}

/// The terminal's columns and rows; [`DEFAULT_WIDTH`] and no limit when
/// stdout is no terminal.
fn size() -> (usize, Option<usize>) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into ws.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (usize::from(ws.ws_col), Some(usize::from(ws.ws_row)))
    } else {
        (DEFAULT_WIDTH, None)
    }
}

/// Keys arrive one at a time, unechoed, Ctrl-C as a byte: restored on drop.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> Result<Self> {
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and a termios to fill.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error()).context("reading the terminal's mode");
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: a valid fd and termios.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setting the terminal's mode");
        }
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        println!("\x1b[?25h");
        let _ = std::io::stdout().flush();
        // SAFETY: restores the mode read in `enter`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}
