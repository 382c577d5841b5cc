//! A list that holds a single element without a heap allocation: the
//! events of a one-event append and the result of a one-stream append,
//! the common case of every append path.

/// One element inline, or any number in a vector.
#[derive(Debug)]
pub(crate) enum OneOrMany<T> {
    /// Exactly one element.
    One(T),
    /// Zero or several elements (or one, when built from a vector).
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The elements, in order.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(x) => std::slice::from_ref(x),
            OneOrMany::Many(v) => v,
        }
    }

    /// The elements as a vector (allocates for a single element).
    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(x) => vec![x],
            OneOrMany::Many(v) => v,
        }
    }

    /// The last element, if any.
    #[inline]
    pub(crate) fn into_last(self) -> Option<T> {
        match self {
            OneOrMany::One(x) => Some(x),
            OneOrMany::Many(mut v) => v.pop(),
        }
    }
}

impl<T> FromIterator<T> for OneOrMany<T> {
    /// A vector when the iterator is known to hold two elements or more
    /// (collecting a vector passed in reuses its allocation); otherwise
    /// one element inline when there is just one.
    #[inline]
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        if iter.size_hint().0 >= 2 {
            return OneOrMany::Many(iter.collect());
        }
        let Some(first) = iter.next() else {
            return OneOrMany::Many(Vec::new());
        };
        let Some(second) = iter.next() else {
            return OneOrMany::One(first);
        };
        let mut v = Vec::with_capacity(iter.size_hint().0.saturating_add(2));
        v.push(first);
        v.push(second);
        v.extend(iter);
        OneOrMany::Many(v)
    }
}

#[cfg(test)]
mod tests {
    use super::OneOrMany;

    #[test]
    fn keeps_every_element_in_order() {
        for n in 0..5u32 {
            let list: OneOrMany<u32> = (0..n).collect();
            assert_eq!(matches!(list, OneOrMany::One(_)), n == 1);
            let list: OneOrMany<u32> = (0..n).filter(|_| true).collect();
            assert_eq!(list.as_slice(), (0..n).collect::<Vec<_>>().as_slice());
            assert_eq!(list.into_vec(), (0..n).collect::<Vec<_>>());
            let list: OneOrMany<u32> = (0..n).collect();
            assert_eq!(list.into_last(), n.checked_sub(1));
        }
        assert!(matches!([7].into_iter().collect(), OneOrMany::One(7)));
    }

    /// An iterator whose hint says at most one element but that yields
    /// more.
    struct Liar(u32);

    impl Iterator for Liar {
        type Item = u32;
        fn next(&mut self) -> Option<u32> {
            self.0 = self.0.checked_sub(1)?;
            Some(self.0)
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (1, Some(1))
        }
    }

    #[test]
    fn a_wrong_size_hint_loses_nothing() {
        let list: OneOrMany<u32> = Liar(3).collect();
        assert_eq!(list.as_slice(), &[2, 1, 0]);
        let list: OneOrMany<u32> = Liar(0).collect();
        assert!(list.as_slice().is_empty());
    }
}
