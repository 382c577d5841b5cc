//! Fast random event ids.
//!
//! [`crate::EventData::new`] needs a fresh UUID for every event. Asking the
//! operating system for randomness each time costs a system call per event
//! (about a tenth of a small append's time, measured). Instead each thread
//! seeds a xoshiro256++ generator once from the operating system (256 bits)
//! and draws 122 random bits per id, formatted as a version 4 UUID. Ids
//! need to be unique, not unpredictable: with 256 bits of seed per thread,
//! two threads' sequences overlap with negligible probability.

use std::cell::RefCell;

use uuid::Uuid;

/// xoshiro256++ (Blackman and Vigna), seeded from the OS.
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn from_os() -> Xoshiro256 {
        let a = Uuid::new_v4().as_u128();
        let b = Uuid::new_v4().as_u128();
        let s = [a as u64, (a >> 64) as u64, b as u64, (b >> 64) as u64];
        // An all-zero state would stay zero; the OS never gives one, but
        // guard anyway.
        if s == [0; 4] {
            return Xoshiro256 { s: [1, 2, 3, 4] };
        }
        Xoshiro256 { s }
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

thread_local! {
    static GENERATOR: RefCell<Option<Xoshiro256>> = const { RefCell::new(None) };
}

/// A new random (version 4) UUID.
pub(crate) fn new_event_id() -> Uuid {
    let bits = GENERATOR.with(|g| {
        let mut g = g.borrow_mut();
        let g = g.get_or_insert_with(Xoshiro256::from_os);
        (u128::from(g.next()) << 64) | u128::from(g.next())
    });
    uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_version_4_and_distinct_across_threads() {
        let ids: Vec<Uuid> = (0..4)
            .map(|_| std::thread::spawn(|| (0..10_000).map(|_| new_event_id()).collect::<Vec<_>>()))
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 4));
        assert!(ids.iter().all(|id| id.get_variant() == uuid::Variant::RFC4122));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    }

    #[test]
    fn ids_use_all_random_bits() {
        // Every one of the 122 random bits takes both values.
        let mut ones = 0u128;
        let mut zeros = 0u128;
        for _ in 0..1000 {
            let v = new_event_id().as_u128();
            ones |= v;
            zeros |= !v;
        }
        assert_eq!((ones & zeros).count_ones(), 122);
    }
}
