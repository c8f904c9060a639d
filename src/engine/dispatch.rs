//! Which worker gets the next connection, as pure functions of a cursor, a predicate and the
//! client's address, so fairness and affinity are tested here and not through sockets.
//!
//! "Round-robin" is rotation among the workers that can take a connection *now* (ready, with
//! room in their window and, for workers that say `idle`, idle): the one whose turn it is among
//! those gets it, so equal workers share evenly while a busy one is routed around. With
//! `affinity = "client-ip"`, a client address first tries its *home* slot, chosen by rendezvous
//! (highest random weight) hashing over the slot numbers: it depends on the address and the
//! slot count only, so it survives worker restarts, and scaling from n to n+1 slots moves only
//! the clients whose new home is the new slot.

use std::net::IpAddr;

use super::mix::mix;
use crate::wire::protocol::Peer;

/// The `[dispatch]` rules a connection is placed by.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// A client address goes to its home slot first ([`home_slot`]), while that worker's
    /// window has room.
    pub affinity: bool,
    /// Connections placed in one loop turn stay with the worker that took the turn's first,
    /// while it has room (up to its window), before the next worker's turn comes: the batch
    /// reaches it in one message and one wake-up. Off, each goes to the next worker free.
    pub batch: bool,
}

impl Placement {
    /// Batching on, no affinity (for the tests and simulators).
    #[cfg(test)]
    pub const BATCH: Placement = Placement {
        affinity: false,
        batch: true,
    };
}

/// A round-robin cursor over `n` slots.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// The first slot at or after the cursor (wrapping) that `eligible` accepts, without
    /// taking its turn.
    pub fn peek(&self, n: usize, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        if n == 0 {
            return None;
        }
        // (The cursor is below the slot count it was set with, which may have changed since:
        // reduced here, once, with each candidate.)
        (0..n).map(|i| (self.next + i) % n).find(|&i| eligible(i))
    }

    /// `slot` takes its turn: the cursor moves just past it.
    pub fn take(&mut self, slot: usize, n: usize) {
        self.next = (slot + 1) % n.max(1);
    }
}

/// The home slot of a client among `n` slots, by its IP address (not its port), or `None`
/// for a client without one (a Unix socket) or an empty fleet.
pub fn home_slot(peer: &Peer, n: usize) -> Option<usize> {
    let Peer::Inet(addr) = peer else {
        return None;
    };
    let client = match addr.ip().to_canonical() {
        IpAddr::V4(ip) => mix(u32::from(ip) as u64),
        IpAddr::V6(ip) => {
            let bits = u128::from(ip);
            mix((bits >> 64) as u64 ^ mix(bits as u64))
        }
    };
    (0..n).max_by_key(|&slot| mix(client ^ mix(slot as u64 ^ SLOT_SEED)))
}

const SLOT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

#[cfg(test)]
mod tests {
    use super::*;

    /// What the master does: peek, then take the turn of the slot found.
    fn pick(rr: &mut RoundRobin, n: usize, eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        let slot = rr.peek(n, eligible)?;
        rr.take(slot, n);
        Some(slot)
    }

    fn peer(ip: &str) -> Peer {
        Peer::Inet(std::net::SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn all_eligible_rotates_strictly() {
        let mut rr = RoundRobin::default();
        let picks: Vec<_> = (0..7)
            .map(|_| pick(&mut rr, 3, |_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn ineligible_slots_are_skipped_without_losing_the_turn_order() {
        let mut rr = RoundRobin::default();
        let picks: Vec<_> = (0..4)
            .map(|_| pick(&mut rr, 3, |i| i != 1).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        // Slot 1 comes back and takes its place in the rotation after slot 0.
        assert_eq!(pick(&mut rr, 3, |_| true), Some(0));
        assert_eq!(pick(&mut rr, 3, |_| true), Some(1));
    }

    #[test]
    fn nobody_eligible_is_none_and_keeps_the_cursor() {
        let mut rr = RoundRobin::default();
        pick(&mut rr, 3, |_| true);
        assert_eq!(pick(&mut rr, 3, |_| false), None);
        assert_eq!(pick(&mut rr, 3, |_| true), Some(1));
        assert_eq!(pick(&mut rr, 0, |_| true), None);
    }

    #[test]
    fn a_shrinking_fleet_does_not_index_out_of_range() {
        let mut rr = RoundRobin::default();
        for _ in 0..5 {
            pick(&mut rr, 8, |_| true);
        }
        assert_eq!(pick(&mut rr, 2, |_| true), Some(1));
    }

    #[test]
    fn peeking_does_not_take_the_turn() {
        let mut rr = RoundRobin::default();
        assert_eq!(rr.peek(3, |_| true), Some(0));
        assert_eq!(rr.peek(3, |_| true), Some(0));
        rr.take(0, 3);
        assert_eq!(rr.peek(3, |i| i != 1), Some(2));
    }

    #[test]
    fn a_client_address_has_one_home_whatever_its_port() {
        let a = home_slot(&peer("127.0.0.2"), 4);
        let other_port = Peer::Inet("127.0.0.2:1234".parse().unwrap());
        assert_eq!(home_slot(&other_port, 4), a);
        assert!(a.is_some_and(|s| s < 4));
        // An IPv4-mapped IPv6 address is the same client as the IPv4 one.
        assert_eq!(home_slot(&peer("::ffff:127.0.0.2"), 4), a);
        assert_eq!(home_slot(&Peer::Unix, 4), None);
        assert_eq!(home_slot(&peer("127.0.0.2"), 0), None);
    }

    #[test]
    fn homes_spread_evenly_and_scaling_moves_only_clients_of_the_new_slot() {
        let clients: Vec<Peer> = (0..4000u32)
            .map(|i| peer(&std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string()))
            .collect();
        let homes =
            |n| -> Vec<usize> { clients.iter().map(|c| home_slot(c, n).unwrap()).collect() };
        let four = homes(4);
        let mut counts = [0usize; 4];
        for &h in &four {
            counts[h] += 1;
        }
        // 1000 expected per slot; a fair hash stays well within ±15 %.
        assert!(
            counts.iter().all(|&c| (850..=1150).contains(&c)),
            "{counts:?}"
        );
        let five = homes(5);
        let moved: Vec<usize> = (0..clients.len()).filter(|&i| four[i] != five[i]).collect();
        assert!(
            moved.iter().all(|&i| five[i] == 4),
            "a move goes to the new slot only"
        );
        // About a fifth of the clients move: those whose new home is slot 4.
        assert!((600..=1000).contains(&moved.len()), "{} moved", moved.len());
    }

    /// Sticky sessions survive an upgrade to another build: the home of a client is the same
    /// in every build and run (the mix itself is pinned in `mix.rs`): the homes it gives six
    /// clients over 1 to 8 slots (an IPv4-mapped IPv6 address at home
    /// where its IPv4 one is).
    #[test]
    fn homes_are_the_same_in_every_build() {
        for (ip, homes) in [
            ("10.0.0.1", [0, 1, 2, 3, 3, 3, 3, 7]),
            ("192.168.7.42", [0, 0, 0, 0, 0, 0, 0, 0]),
            ("203.0.113.9", [0, 0, 2, 2, 4, 4, 6, 6]),
            ("::1", [0, 0, 0, 0, 0, 0, 0, 0]),
            ("2001:db8::17", [0, 0, 0, 0, 0, 5, 5, 5]),
            ("::ffff:10.0.0.1", [0, 1, 2, 3, 3, 3, 3, 7]),
        ] {
            let got: Vec<usize> = (1..=8).map(|n| home_slot(&peer(ip), n).unwrap()).collect();
            assert_eq!(got, homes, "{ip}");
        }
    }

    /// The cursor counts in the slots of the moment: after the last of 3 took its turn, with 4
    /// slots the turn is slot 0's (the fleet grew), not one further on.
    #[test]
    fn the_turn_after_the_last_slot_is_the_first_whatever_the_count_becomes() {
        let mut rr = RoundRobin::default();
        rr.take(2, 3);
        assert_eq!(rr.peek(4, |_| true), Some(0));
        assert_eq!(rr.peek(2, |_| true), Some(0));
    }
}
