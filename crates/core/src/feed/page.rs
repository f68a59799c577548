//! One page out of candidate items, by Mastodon-style cursors (SPEC.md §10.3).
//!
//! Pure functions: candidates in, page out. Items are identified by their
//! post id; a larger id is newer. Pages are always newest first.

use std::sync::Arc;

use super::Post;
use heartline_proto::Cursor;

/// The ids a page may hold, `after < id < before`, and which end it starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub after: u64,
    pub before: u64,
    /// `min_id`: the items right after `after`, rather than the newest ones.
    pub oldest_first: bool,
}

impl Bounds {
    pub fn of(cursor: &Cursor) -> Self {
        Self {
            after: cursor.since_id.or(cursor.min_id).unwrap_or(0),
            before: cursor.max_id.unwrap_or(u64::MAX),
            oldest_first: cursor.min_id.is_some(),
        }
    }

    pub fn contains(&self, id: u64) -> bool {
        self.after < id && id < self.before
    }

    /// The same bounds, capped to ids at or below `horizon`.
    pub fn below(&self, horizon: u64) -> Self {
        Self { before: self.before.min(horizon.saturating_add(1)), ..*self }
    }
}

/// The page: candidates within `bounds` (duplicates allowed, any order),
/// `limit` of them from the right end, newest first.
pub fn select(mut candidates: Vec<Arc<Post>>, bounds: Bounds, limit: usize) -> Vec<Arc<Post>> {
    candidates.retain(|p| bounds.contains(p.id) && !p.is_deleted());
    candidates.sort_unstable_by_key(|p| std::cmp::Reverse(p.id));
    candidates.dedup_by_key(|p| p.id);
    if bounds.oldest_first {
        let skip = candidates.len().saturating_sub(limit);
        candidates.drain(..skip);
    } else {
        candidates.truncate(limit);
    }
    candidates
}

/// Whether a page picked from items that are complete only above `horizon`
/// (0: complete everywhere) is exact; if not, items at or below it must come
/// from the store.
pub fn exact(page: &[Arc<Post>], bounds: Bounds, limit: usize, horizon: u64) -> bool {
    if horizon == 0 || bounds.after >= horizon {
        return true;
    }
    !bounds.oldest_first && page.len() == limit && page.last().is_some_and(|p| p.id > horizon)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posts(ids: &[u64]) -> Vec<Arc<Post>> {
        ids.iter().map(|&id| Arc::new(Post::new(id, 1, 0, bytes::Bytes::new()))).collect()
    }

    fn ids(page: &[Arc<Post>]) -> Vec<u64> {
        page.iter().map(|p| p.id).collect()
    }

    fn cursor(max_id: Option<u64>, since_id: Option<u64>, min_id: Option<u64>) -> Bounds {
        Bounds::of(&Cursor { max_id, since_id, min_id })
    }

    #[test]
    fn cursors_pick_the_right_end_and_return_newest_first() {
        let all = posts(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(ids(&select(all.clone(), cursor(None, None, None), 3)), [9, 8, 7]);
        assert_eq!(ids(&select(all.clone(), cursor(Some(7), None, None), 3)), [6, 5, 4]);
        assert_eq!(ids(&select(all.clone(), cursor(None, Some(2), None), 3)), [9, 8, 7]);
        assert_eq!(ids(&select(all.clone(), cursor(None, None, Some(2)), 3)), [5, 4, 3]);
        assert_eq!(ids(&select(all.clone(), cursor(Some(5), Some(2), None), 9)), [4, 3]);
        assert_eq!(ids(&select(all, cursor(Some(1), None, None), 3)), Vec::<u64>::new());
    }

    #[test]
    fn duplicates_and_deleted_items_never_show() {
        let all = posts(&[3, 1, 2, 3, 2]);
        all[0].delete();
        assert_eq!(ids(&select(all, cursor(None, None, None), 10)), [3, 2, 1], "the other copy of 3 is live");
    }

    #[test]
    fn a_page_is_exact_only_when_it_stays_above_the_horizon() {
        let page = posts(&[9, 8, 7]);
        let newest = cursor(None, None, None);
        assert!(exact(&page, newest, 3, 6));
        assert!(!exact(&page, newest, 3, 7));
        assert!(!exact(&page[..2], newest, 3, 1), "a short page may be missing older items");
        assert!(exact(&page[..2], newest, 3, 0));
        assert!(exact(&page, cursor(None, Some(6), None), 3, 6));
        assert!(!exact(&page, cursor(None, None, Some(5)), 3, 6));
    }
}
