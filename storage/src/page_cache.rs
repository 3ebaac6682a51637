//! The page cache: the newest materialized image of recently used pages, least recently used
//! out first, bounded in pages.
//!
//! An entry is the page as of the segment's materialized point, so it answers GetPage for any
//! LSN from the page's own LSN up to that point without touching layers (a *hit*). The
//! materializer updates entries as it applies redo, under the same lock that moves the
//! materialized point (see [`crate::page_store`]), which is what keeps entries current.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sixfold_log_service::PageId;

use crate::page::Page;

pub struct PageCache {
    capacity: usize,
    map: HashMap<PageId, (Arc<Page>, u64)>,
    /// Last use → page, oldest first.
    order: BTreeMap<u64, PageId>,
    tick: u64,
}

impl PageCache {
    pub fn new(capacity_pages: usize) -> PageCache {
        PageCache {
            capacity: capacity_pages.max(1),
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&mut self, page: PageId) -> Option<Arc<Page>> {
        self.tick += 1;
        let tick = self.tick;
        let (img, used) = self.map.get_mut(&page)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, page);
        Some(img.clone())
    }

    pub fn put(&mut self, page: PageId, img: Arc<Page>) {
        self.tick += 1;
        if let Some((_, used)) = self.map.insert(page, (img, self.tick)) {
            self.order.remove(&used);
        }
        self.order.insert(self.tick, page);
        while self.map.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
    }

    pub fn remove(&mut self, page: PageId) {
        if let Some((_, used)) = self.map.remove(&page) {
            self.order.remove(&used);
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the cache never holds more than its capacity and evicts the least recently used.
    #[test]
    fn evicts_least_recently_used() {
        let mut c = PageCache::new(2);
        let img = Arc::new(Page::new_zeroed());
        c.put(PageId(1), img.clone());
        c.put(PageId(2), img.clone());
        assert!(c.get(PageId(1)).is_some());
        c.put(PageId(3), img.clone());
        assert_eq!(c.len(), 2);
        assert!(c.get(PageId(2)).is_none());
        assert!(c.get(PageId(1)).is_some() && c.get(PageId(3)).is_some());
        c.put(PageId(3), img);
        assert_eq!(c.len(), 2);
        c.remove(PageId(3));
        assert_eq!(c.len(), 1);
    }
}
