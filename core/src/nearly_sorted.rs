//! Sorting data that is almost in order (a few elements a few places off): an insertion pass,
//! linear in the number of moves, with a budget of 8 moves per element, past which it sorts
//! the whole slice. For unique keys the result is the same as any other sort.

/// Sorts `v` by `key` (unstable in general; stable while the insertion pass runs), fast when
/// few elements are out of place.
pub(crate) fn sort_nearly_sorted_by_key<T, K: Ord>(v: &mut [T], key: impl Fn(&T) -> K) {
    let mut budget = v.len().saturating_mul(8);
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && key(&v[j - 1]) > key(&v[j]) {
            if budget == 0 {
                v.sort_unstable_by_key(key);
                return;
            }
            budget -= 1;
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sort_nearly_sorted_by_key;

    #[test]
    fn nearly_sorted_and_shuffled_inputs_both_come_out_sorted() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as i64
        };
        // A few displaced elements (insertion pass) and a random shuffle (budget exhausted).
        for displacement in [0i64, 3, 1_000_000] {
            let mut v: Vec<(i64, usize)> = (0..4000)
                .map(|i| (i * 10 + next() % (displacement * 10 + 1), i as usize))
                .collect();
            let mut want = v.clone();
            want.sort();
            sort_nearly_sorted_by_key(&mut v, |&(t, i)| (t, i));
            assert_eq!(v, want, "displacement {displacement}");
        }
        let mut empty: Vec<u8> = vec![];
        sort_nearly_sorted_by_key(&mut empty, |&x| x);
    }
}
