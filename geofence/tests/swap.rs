//! Readers keep answering while fences are swapped under them: every answer comes from
//! one whole snapshot, never a mix, and no reader waits for the writer.

use std::sync::atomic::{AtomicBool, Ordering};

use geo::Point;
use geofence::{Fence, FenceId, FenceIndex, FenceRules, Shape, SharedIndex};

/// Generation `g`: fences `g*10 .. g*10+10`, circles around the same point, so a query
/// there returns the ten ids of exactly one generation.
fn generation(g: u64) -> FenceIndex {
    FenceIndex::build((0..10).map(|i| {
        Fence::new(
            FenceId(g * 10 + i),
            Shape::Circle {
                center: Point::new(10.0 + i as f64 * 1e-5, 50.0),
                radius_m: 500.0,
            },
            FenceRules::default(),
        )
        .unwrap()
    }))
    .unwrap()
}

#[test]
fn readers_see_whole_snapshots_during_swaps() {
    let shared = SharedIndex::new(generation(0));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let snap = shared.load();
                        let ids = snap.containing(10.0, 50.0);
                        assert_eq!(ids.len(), 10);
                        let g = ids[0].0 / 10;
                        assert!(
                            ids.iter().enumerate().all(|(i, id)| id.0 == g * 10 + i as u64),
                            "{ids:?}"
                        );
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        for g in 1..=200 {
            shared.store(generation(g));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    assert_eq!(shared.load().containing(10.0, 50.0)[0], FenceId(2000));
}
