//! KV caches: growing in steps, rotating windows, trim, state round trips.

use gomlx::cache::{KvCache, STEP};
use gomlx::mlx::Array;

fn kv(start: usize, l: usize) -> (Array, Array) {
    // [1, 1, l, 2] with values equal to their position, so contents are checkable.
    let v: Vec<f32> = (start..start + l).flat_map(|p| [p as f32, -(p as f32)]).collect();
    (Array::from_slice(&v, &[1, 1, l as i32, 2]).unwrap(), Array::from_slice(&v, &[1, 1, l as i32, 2]).unwrap())
}

fn positions(a: &Array) -> Vec<f32> {
    a.to_vec::<f32>().unwrap().chunks(2).map(|c| c[0]).collect()
}

#[test]
fn growing_cache_appends_in_steps_and_trims() {
    let mut c = KvCache::growing();
    let (k, v) = kv(0, 5);
    let a = c.update(k, v).unwrap();
    assert_eq!(positions(&a.keys), vec![0., 1., 2., 3., 4.]);
    assert_eq!(a.preceding, 0);
    // The buffer is one step long, not five positions.
    assert_eq!(c.arrays()[0].dim(2), STEP);
    for p in 5..300 {
        let (k, v) = kv(p, 1);
        let a = c.update(k, v).unwrap();
        assert_eq!(a.keys.dim(2) as usize, p + 1);
        assert_eq!(a.preceding, p);
    }
    assert_eq!(c.arrays()[0].dim(2), 2 * STEP);
    assert_eq!(c.offset(), 300);
    assert_eq!(c.trim(10).unwrap(), 10);
    let (k, v) = kv(290, 1);
    let a = c.update(k, v).unwrap();
    assert_eq!(positions(&a.keys).last(), Some(&290.0));
    assert_eq!(a.keys.dim(2), 291);
    let (sk, _) = c.state().unwrap().unwrap();
    assert_eq!(positions(&sk)[..3], [0., 1., 2.]);
}

#[test]
fn rotating_cache_keeps_the_window() {
    let w = 4;
    let mut c = KvCache::rotating(w);
    // A prompt longer than the window: all of it is returned for masking.
    let (k, v) = kv(0, 6);
    let a = c.update(k, v).unwrap();
    assert_eq!(positions(&a.keys), vec![0., 1., 2., 3., 4., 5.]);
    assert_eq!(a.preceding, 0);
    // Single tokens: the ring holds exactly the last w positions.
    for p in 6..11 {
        let (k, v) = kv(p, 1);
        let a = c.update(k, v).unwrap();
        let mut got = positions(&a.keys);
        got.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let want: Vec<f32> = ((p + 1 - w)..=p).map(|x| x as f32).collect();
        assert_eq!(got, want, "step {p}");
        let slot = a.ring_slot.expect("in-place ring update");
        assert_eq!(positions(&a.keys)[slot], p as f32);
    }
    // A multi-token step after wrapping: window-1 older positions, in order, then the new ones.
    let (k, v) = kv(11, 3);
    let a = c.update(k, v).unwrap();
    assert_eq!(positions(&a.keys), vec![8., 9., 10., 11., 12., 13.]);
    assert_eq!(a.preceding, 3);
    let (sk, _) = c.state().unwrap().unwrap();
    assert_eq!(positions(&sk), vec![10., 11., 12., 13.]);
    assert_eq!(c.offset(), 14);
    assert_eq!(c.trim(2).unwrap(), 2);
    assert_eq!(c.offset(), 12);
    let (sk, _) = c.state().unwrap().unwrap();
    assert_eq!(positions(&sk), vec![10., 11.]);
}

#[test]
fn state_round_trip() {
    let mut c = KvCache::growing();
    let (k, v) = kv(0, 7);
    c.update(k, v).unwrap();
    let (sk, sv) = c.state().unwrap().unwrap();
    let mut d = KvCache::growing();
    d.set_state(sk, sv, 7).unwrap();
    let (k, v) = kv(7, 1);
    let a = d.update(k, v).unwrap();
    assert_eq!(positions(&a.keys), (0..8).map(|p| p as f32).collect::<Vec<_>>());
    let mut r = KvCache::rotating(3);
    let (sk, sv) = c.state().unwrap().unwrap();
    r.set_state(sk, sv, 7).unwrap();
    let (rk, _) = r.state().unwrap().unwrap();
    assert_eq!(positions(&rk), vec![4., 5., 6.]);
    assert!(KvCache::growing().set_state(kv(0, 3).0, kv(0, 3).1, 2).is_err());
}

#[test]
fn save_and_load_round_trip_continues_identically() {
    use gomlx::models::{LoadOptions, Logits, Model};
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gemma3_text");
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let prompt: Vec<u32> = (3..23).collect();
    let mut caches = model.new_caches();
    let x = Array::from_slice(&prompt, &[1, 20]).unwrap();
    model.forward(&x, &mut caches, None, Logits::Last).unwrap();
    let path = std::env::temp_dir().join(format!("gomlx-cache-{}.safetensors", std::process::id()));
    gomlx::cache::save(&path, &caches, &prompt).unwrap();
    let (mut loaded, tokens) = gomlx::cache::load(&path).unwrap();
    assert_eq!(tokens, prompt);
    assert_eq!(loaded.len(), caches.len());
    let next = Array::from_slice(&[40u32, 41], &[1, 2]).unwrap();
    let a = model.forward(&next, &mut caches, None, Logits::All).unwrap().to_vec::<f32>().unwrap();
    let b = model.forward(&next, &mut loaded, None, Logits::All).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(a, b);
    std::fs::write(&path, b"not a cache").unwrap();
    assert!(gomlx::cache::load(&path).is_err());
    std::fs::remove_file(&path).ok();
}

#[test]
fn exact_cache_holds_only_what_was_written() {
    let mut c = KvCache::growing().exact();
    let (k, v) = kv(0, 5);
    let a = c.update(k, v).unwrap();
    assert_eq!(positions(&a.keys), vec![0., 1., 2., 3., 4.]);
    assert_eq!(c.arrays()[0].dim(2), 5);
    let (k, v) = kv(5, 3);
    let a = c.update(k, v).unwrap();
    assert_eq!((positions(&a.keys), a.preceding), (vec![0., 1., 2., 3., 4., 5., 6., 7.], 5));
    assert_eq!(c.arrays()[0].dim(2), 8);
    // After a state is set (classify's shared prefix), appends continue from it.
    let mut c = KvCache::growing().exact();
    let (k, v) = kv(0, 4);
    c.set_state(k, v, 4).unwrap();
    let (k, v) = kv(4, 2);
    let a = c.update(k, v).unwrap();
    assert_eq!((positions(&a.values), a.preceding), (vec![0., 1., 2., 3., 4., 5.], 4));
    // Rotating caches are unchanged by exact().
    assert!(matches!(KvCache::rotating(8).exact(), KvCache::Rotating(_)));
}
