//! The fence index: an immutable snapshot of all fences, and the handle that swaps it.
//!
//! Readers never wait: [`SharedIndex`] hands out `Arc<FenceIndex>` snapshots through
//! `arc-swap`, and a fence change builds a whole new index off to the side and swaps the
//! pointer. A batch evaluated against one snapshot sees one consistent set of fences.

use std::ops::ControlFlow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rstar::{AABB, RTree, RTreeObject};

use crate::error::FenceError;
use crate::shape::{Fence, FenceId};

/// One R-tree entry: a part's envelope (a part crossing the antimeridian has two).
#[derive(Debug, Clone)]
struct Entry {
    env: AABB<[f64; 2]>,
    fence: u32,
    part: u32,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.env
    }
}

/// All fences, prepared and indexed. Immutable; build a new one to change fences.
#[derive(Debug)]
pub struct FenceIndex {
    /// Sorted by id, so a slot can be found from an id by binary search and results come
    /// out in id order.
    fences: Vec<Fence>,
    tree: RTree<Entry>,
}

impl Default for FenceIndex {
    fn default() -> Self {
        FenceIndex {
            fences: Vec::new(),
            tree: RTree::new(),
        }
    }
}

/// Points → containing fences for a whole batch, flattened (CSR): the fences of point
/// `i` are `fences[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchHits {
    pub offsets: Vec<u32>,
    pub fences: Vec<FenceId>,
}

impl BatchHits {
    pub fn of(&self, i: usize) -> &[FenceId] {
        &self.fences[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FenceIndex {
    /// Index `fences`. Ids must be unique.
    pub fn build(fences: impl IntoIterator<Item = Fence>) -> Result<FenceIndex, FenceError> {
        let mut fences: Vec<Fence> = fences.into_iter().collect();
        fences.sort_by_key(Fence::id);
        if let Some(w) = fences.windows(2).find(|w| w[0].id() == w[1].id()) {
            return Err(FenceError::DuplicateId(w[0].id()));
        }
        let mut entries = Vec::new();
        for (fi, f) in fences.iter().enumerate() {
            for (pi, p) in f.parts.iter().enumerate() {
                for (lo, hi) in p.bbox.wrapped_envelopes() {
                    entries.push(Entry {
                        env: AABB::from_corners(lo, hi),
                        fence: fi as u32,
                        part: pi as u32,
                    });
                }
            }
        }
        Ok(FenceIndex {
            fences,
            tree: RTree::bulk_load(entries),
        })
    }

    pub fn len(&self) -> usize {
        self.fences.len()
    }
    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }
    pub fn fences(&self) -> &[Fence] {
        &self.fences
    }
    pub fn get(&self, id: FenceId) -> Option<&Fence> {
        self.slot(id).map(|s| &self.fences[s as usize])
    }
    pub(crate) fn slot(&self, id: FenceId) -> Option<u32> {
        self.fences.binary_search_by_key(&id, Fence::id).ok().map(|s| s as u32)
    }
    pub(crate) fn at(&self, slot: u32) -> &Fence {
        &self.fences[slot as usize]
    }

    /// Append the slots of the fences containing `(lon, lat)` to `out`, ascending.
    /// A point with a non-finite or out-of-range coordinate is in no fence.
    pub(crate) fn containing_slots(&self, lon: f64, lat: f64, out: &mut Vec<u32>) {
        if !((-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat)) {
            return;
        }
        let start = out.len();
        let q = [lon, lat];
        let _ = self
            .tree
            .locate_in_envelope_intersecting_int(&AABB::from_point(q), |e: &Entry| {
                let f = &self.fences[e.fence as usize];
                // A fence with several parts (multipolygon, corridor chunks, or a part
                // split at the antimeridian) may be hit more than once.
                if !out[start..].contains(&e.fence) && f.parts[e.part as usize].contains(q) {
                    out.push(e.fence);
                }
                ControlFlow::<()>::Continue(())
            });
        out[start..].sort_unstable();
    }

    /// Ids of the fences containing `(lon, lat)`, ascending.
    pub fn containing(&self, lon: f64, lat: f64) -> Vec<FenceId> {
        let mut slots = Vec::new();
        self.containing_slots(lon, lat, &mut slots);
        slots.into_iter().map(|s| self.at(s).id()).collect()
    }

    /// [`containing`](Self::containing) for many `[lon, lat]` points at once.
    pub fn containing_batch(&self, points: &[[f64; 2]]) -> BatchHits {
        let mut hits = BatchHits {
            offsets: Vec::with_capacity(points.len() + 1),
            fences: Vec::new(),
        };
        let mut slots = Vec::new();
        hits.offsets.push(0);
        for p in points {
            slots.clear();
            self.containing_slots(p[0], p[1], &mut slots);
            hits.fences.extend(slots.iter().map(|&s| self.at(s).id()));
            hits.offsets.push(hits.fences.len() as u32);
        }
        hits
    }

    /// How many (point, fence) containments a batch has: the benchmark's checksum.
    pub fn count_containing(&self, points: &[[f64; 2]]) -> u64 {
        let mut slots = Vec::new();
        let mut n = 0u64;
        for p in points {
            slots.clear();
            self.containing_slots(p[0], p[1], &mut slots);
            n += slots.len() as u64;
        }
        n
    }
}

/// The live index: readers `load()` a snapshot without locking; a writer `store()`s a
/// freshly built one. In-flight readers keep the old snapshot until they drop it.
#[derive(Debug)]
pub struct SharedIndex {
    current: ArcSwap<FenceIndex>,
}

impl Default for SharedIndex {
    fn default() -> Self {
        SharedIndex::new(FenceIndex::default())
    }
}

impl SharedIndex {
    pub fn new(index: FenceIndex) -> SharedIndex {
        SharedIndex {
            current: ArcSwap::from_pointee(index),
        }
    }

    /// The current snapshot. Hold it for a batch, not forever: an old snapshot keeps
    /// the old fences alive.
    pub fn load(&self) -> Arc<FenceIndex> {
        self.current.load_full()
    }

    /// Publish a new snapshot; returns the previous one.
    pub fn store(&self, index: FenceIndex) -> Arc<FenceIndex> {
        self.current.swap(Arc::new(index))
    }

    /// Validate, build and publish in one go. On error the current snapshot stays.
    pub fn rebuild(&self, fences: impl IntoIterator<Item = Fence>) -> Result<Arc<FenceIndex>, FenceError> {
        let index = FenceIndex::build(fences)?;
        Ok(self.store(index))
    }
}
