//! The packet context the datapath runs on: an XDP frame (`lb_xdp`) or a tc
//! skb (`lb_tc`, clsact ingress). Every module takes a `C: Pkt` and is
//! compiled once per hook; what differs between the hooks lives here and
//! nowhere else:
//! - the verdicts, and how a packet is sent back out or on (XDP_TX and a
//!   devmap redirect; `bpf_redirect` at tc, `bpf_redirect_peer` to a veth
//!   whose peer is in another namespace);
//! - resizing a packet for the answers lb builds itself (RST, frag needed);
//! - the L4 checksum after NAT. A tc skb from a local stack (a veth peer with
//!   checksum offload) may be CHECKSUM_PARTIAL: its checksum field holds the
//!   uncomplemented pseudo-header sum, which only the kernel's
//!   `bpf_l4_csum_replace` updates correctly. That helper, like every helper
//!   that may move skb data, invalidates all packet pointers: callers derive
//!   them again after `fix_l4_check` (the verifier refuses any that do not);
//! - where the packet's bytes are: an skb may hold only its first bytes in
//!   the linear area packet pointers reach (TCP payload sits in page
//!   fragments), so `lb_tc` pulls the headers in first (`pull_headers`) and
//!   lengths are checked against the whole packet (`len`);
//! - the length an MTU is checked with: a GSO skb is cut to the route's MTU
//!   by the kernel when it leaves, so it is never "too big".
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    cty::c_void,
    helpers::generated::{
        bpf_l4_csum_replace, bpf_redirect, bpf_redirect_peer, bpf_skb_change_head,
        bpf_skb_change_tail, bpf_skb_pull_data, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    programs::{TcContext, XdpContext},
};

use crate::{
    csum,
    family::Family,
    maps::{JUMP_TC, JUMP_XDP, TX_PORTS},
    parse::L4,
};

/// `bpf_l4_csum_replace`'s flag for an IPv6 packet (linux/bpf.h, 6.16).
const BPF_F_IPV6: u64 = 1 << 7;

/// Bytes from the frame's start every header lb reads or writes lies in:
/// Ethernet with one tag, an IPv4 header with options, and what follows it
/// up to the quote of an ICMP error (outer ICMP, inner IPv4 with options,
/// the inner TCP header's checksum), rounded up.
const HEADERS: u32 = 192;

pub trait Pkt {
    /// The hook's verdict for "to the kernel" and for "drop".
    const PASS: u32;
    const DROP: u32;
    /// Whether this is the tc hook (for `lb trace`'s records).
    #[cfg_attr(
        not(feature = "trace"),
        expect(dead_code, reason = "read by the trace build")
    )]
    const TC: bool;
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The whole packet's length, linear or not.
    fn len(&self) -> usize;
    /// Makes the first `HEADERS` bytes (or all, if fewer) reachable by
    /// packet pointers. Called first thing, before any pointer exists.
    fn pull_headers(&self);
    /// The interface the packet arrived by.
    fn ifindex(&self) -> u32;
    /// The context pointer helpers such as `bpf_fib_lookup` take.
    fn raw(&self) -> *mut c_void;
    /// The verdict that sends the packet back out the interface it came by.
    fn tx(&self) -> u32;
    /// `tx` for a packet lb made itself in answer (a RST, an ICMP error, an
    /// echo reply), which may be the only packet towards its receiver.
    fn answer(&self) -> u32;
    /// The verdict that sends the packet out of `ifindex`, one of lb's
    /// interfaces (`TX_PORTS`); `PASS` if that fails.
    fn redirect(&self, ifindex: u32) -> u32;
    /// `redirect` to a veth whose peer lives in another network namespace
    /// (`PEER_PORTS`): tc puts the packet on the peer's ingress at once,
    /// skipping the veth's transmit and the peer's backlog queue (as Cilium
    /// does for pods). XDP has no such path and redirects.
    fn redirect_peer(&self, ifindex: u32) -> u32;
    /// Cuts the packet to its first `len` bytes, then grows `head` bytes in
    /// front of it. Invalidates packet pointers.
    fn resize(&self, len: usize, head: usize) -> bool;
    /// The IP length (as in the header, `Family::tot_len`) an MTU is
    /// checked with: zero for a GSO skb (see the module doc).
    fn mtu_len(&self, tot_len: [u8; 2]) -> u16;
    /// Hands the packet to the hook's IPv6 program (`maps::JUMP_XDP`);
    /// returns only if that program is not in place.
    fn tail_v6(&self);
    /// Updates the TCP/UDP checksum after NAT changed a pseudo-header
    /// address (by `addr_change`, `csum::change`) and a port, the fields
    /// already rewritten. Invalidates packet pointers (tc).
    fn fix_l4_check<F: Family>(&self, l4: &L4, addr_change: u32, old_port: [u8; 2], port: [u8; 2]);
}

impl Pkt for XdpContext {
    const PASS: u32 = xdp_action::XDP_PASS;
    const DROP: u32 = xdp_action::XDP_DROP;
    const TC: bool = false;

    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.data_end() - self.data()
    }

    #[inline(always)]
    fn pull_headers(&self) {}

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.as_ptr()
    }

    #[inline(always)]
    fn tx(&self) -> u32 {
        xdp_action::XDP_TX
    }

    /// By the devmap to the interface it came in by, XDP_TX only if that
    /// fails. On a veth whose peer runs no XDP program, an XDP_TX frame
    /// waits in the peer's ring until something else wakes the peer (the
    /// kernel schedules its NAPI only for a peer with a program), which a
    /// lone RST or ICMP error never does: the client would wait out its
    /// timeout. A redirect wakes the peer. Forwarded traffic keeps XDP_TX.
    #[inline(always)]
    fn answer(&self) -> u32 {
        TX_PORTS
            .redirect(self.ifindex(), xdp_action::XDP_TX as u64)
            .unwrap_or(xdp_action::XDP_TX)
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> u32 {
        TX_PORTS
            .redirect(ifindex, xdp_action::XDP_PASS as u64)
            .unwrap_or(xdp_action::XDP_PASS)
    }

    #[inline(always)]
    fn redirect_peer(&self, ifindex: u32) -> u32 {
        self.redirect(ifindex)
    }

    #[inline(always)]
    fn resize(&self, len: usize, head: usize) -> bool {
        let have = self.data_end() - self.data();
        // SAFETY: shrinking by less than the frame's length, then growing
        // the head into the headroom XDP guarantees (256 bytes).
        unsafe {
            (len == have || bpf_xdp_adjust_tail(self.ctx, -((have - len) as i32)) == 0)
                && (head == 0 || bpf_xdp_adjust_head(self.ctx, -(head as i32)) == 0)
        }
    }

    #[inline(always)]
    fn mtu_len(&self, tot_len: [u8; 2]) -> u16 {
        u16::from_be_bytes(tot_len)
    }

    #[inline(always)]
    fn tail_v6(&self) {
        // SAFETY: the program was called with this context.
        unsafe { JUMP_XDP.tail_call(self, 0) }
    }

    #[inline(always)]
    fn fix_l4_check<F: Family>(&self, l4: &L4, addr_change: u32, old_port: [u8; 2], port: [u8; 2]) {
        let check = l4.check();
        // A UDP checksum of zero means "none": it stays zero.
        if !l4.is_tcp() && check == [0, 0] {
            return;
        }
        let mut new = csum::replace2(csum::apply(check, addr_change), old_port, port);
        // In UDP a computed zero is sent as all ones (RFC 768).
        if !l4.is_tcp() && new == [0, 0] {
            new = [0xff, 0xff];
        }
        l4.set_check(new);
    }
}

impl Pkt for TcContext {
    const PASS: u32 = TC_ACT_OK as u32;
    const DROP: u32 = TC_ACT_SHOT as u32;
    const TC: bool = true;

    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }

    #[inline(always)]
    fn pull_headers(&self) {
        let want = TcContext::len(self).min(HEADERS);
        if (self.data_end() - self.data()) < want as usize {
            // SAFETY: the context pointer the program was called with. On
            // failure the parser finds the headers short and passes.
            unsafe { bpf_skb_pull_data(self.skb.skb, want) };
        }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context pointer the program was called with.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.as_ptr()
    }

    #[inline(always)]
    fn tx(&self) -> u32 {
        self.redirect(self.ifindex())
    }

    #[inline(always)]
    fn answer(&self) -> u32 {
        self.tx()
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> u32 {
        // SAFETY: a plain helper call; flags 0 is egress.
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }

    #[inline(always)]
    fn redirect_peer(&self, ifindex: u32) -> u32 {
        // SAFETY: a plain helper call; flags must be 0.
        unsafe { bpf_redirect_peer(ifindex, 0) as u32 }
    }

    #[inline(always)]
    fn resize(&self, len: usize, head: usize) -> bool {
        // SAFETY: the context pointer the program was called with.
        unsafe {
            bpf_skb_change_tail(self.skb.skb, len as u32, 0) == 0
                && (head == 0 || bpf_skb_change_head(self.skb.skb, head as u32, 0) == 0)
        }
    }

    #[inline(always)]
    fn mtu_len(&self, tot_len: [u8; 2]) -> u16 {
        // SAFETY: the context pointer the program was called with.
        if unsafe { (*self.skb.skb).gso_size } != 0 {
            return 0;
        }
        u16::from_be_bytes(tot_len)
    }

    #[inline(always)]
    fn tail_v6(&self) {
        // SAFETY: the program was called with this context.
        unsafe { JUMP_TC.tail_call(self, 0) }
    }

    #[inline(always)]
    fn fix_l4_check<F: Family>(&self, l4: &L4, addr_change: u32, old_port: [u8; 2], port: [u8; 2]) {
        let off = l4.check_off as u32;
        // MARK_MANGLED_0: a UDP checksum of zero (none) stays zero, a
        // computed zero is written as all ones (RFC 768).
        let udp = if l4.is_tcp() {
            0
        } else {
            BPF_F_MARK_MANGLED_0 as u64
        };
        // SAFETY: the context pointer the program was called with; the
        // helper checks the offset against the packet.
        unsafe {
            // The address change "by diff" (size 0). BPF_F_IPV6: an IPv6
            // pseudo-header is not in a CHECKSUM_COMPLETE skb's csum, so
            // the helper must leave that alone; a kernel before 6.16 does
            // not know the flag and refuses the call, and is asked again
            // without it.
            let flags = BPF_F_PSEUDO_HDR as u64 | udp;
            let diff = csum::wsum(addr_change) as u64;
            if !F::V6 || bpf_l4_csum_replace(self.skb.skb, off, 0, diff, flags | BPF_F_IPV6) < 0 {
                bpf_l4_csum_replace(self.skb.skb, off, 0, diff, flags);
            }
            bpf_l4_csum_replace(
                self.skb.skb,
                off,
                u16::from_ne_bytes(old_port) as u64,
                u16::from_ne_bytes(port) as u64,
                udp | 2,
            );
        }
    }
}
