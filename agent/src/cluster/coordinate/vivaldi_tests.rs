//! Serf's own expectations of its coordinate client (`client_test.go`,
//! `coordinate_test.go`), asserted against this port.

use std::time::Duration;

use muster_server::model::Coordinate;

use super::*;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1.0e-6, "{a} != {b}");
}

fn close_vec(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        close(*x, *y);
    }
}

fn config(dims: usize) -> VivaldiConfig {
    VivaldiConfig {
        dimensionality: dims,
        ..VivaldiConfig::default()
    }
}

fn origin_of(c: &VivaldiConfig) -> Coordinate {
    Coordinate::origin(c.dimensionality, c.error_max, c.height_min)
}

#[test]
fn defaults_are_serfs() {
    let c = VivaldiConfig::default();
    assert_eq!(c.dimensionality, 8);
    assert_eq!(c.error_max, 1.5);
    assert_eq!((c.ce, c.cc), (0.25, 0.25));
    assert_eq!(c.adjustment_window, 20);
    assert_eq!(c.height_min, 10.0e-6);
    assert_eq!(c.latency_filter_size, 3);
    assert_eq!(c.gravity_rho, 150.0);
}

#[test]
fn a_new_client_is_at_the_origin() {
    let cfg = config(7);
    let v = Vivaldi::new(cfg.clone());
    assert_eq!(v.coordinate(), origin_of(&cfg));
}

#[test]
fn update_moves_away_from_a_node_that_is_farther_than_expected() {
    let cfg = config(3);
    let mut v = Vivaldi::new(cfg.clone());
    close_vec(&v.coordinate().vec, &[0.0, 0.0, 0.0]);

    // A node right above, observed at twice the distance it appears to be.
    let mut other = origin_of(&cfg);
    other.vec[2] = 0.001;
    let rtt = Duration::from_secs_f64(2.0 * other.vec[2]);
    let mut c = v.update("node", &other, rtt).expect("update");
    assert!(c.vec[2] < 0.0, "z {} should be < 0", c.vec[2]);

    c.vec[2] = 99.0;
    v.set_coordinate(c).expect("set");
    close(v.coordinate().vec[2], 99.0);
}

#[test]
fn round_trips_out_of_range_are_refused_and_change_nothing() {
    let cfg = config(3);
    let mut v = Vivaldi::new(cfg.clone());
    let mut other = origin_of(&cfg);
    other.vec[2] = 0.001;
    let before = v.distance_to(&other);
    for secs in [11, 35, u64::MAX / 2_000_000_000] {
        let err = v.update("node", &other, Duration::from_secs(secs));
        assert_eq!(err, Err(UpdateError::RttOutOfRange));
        assert_eq!(v.distance_to(&other), before);
    }
}

#[test]
fn distance_to_is_the_estimate_in_seconds() {
    let mut cfg = config(3);
    cfg.height_min = 0.0;
    let v = Vivaldi::new(cfg.clone());
    let mut other = origin_of(&cfg);
    other.vec[2] = 12.345;
    close(v.distance_to(&other).expect("compatible"), 12.345);
}

#[test]
fn latency_filter_takes_the_median_per_node() {
    let mut v = Vivaldi::new(VivaldiConfig::default());
    close(v.latency_filter("alice", 0.201), 0.201);
    close(v.latency_filter("alice", 0.200), 0.201);
    close(v.latency_filter("alice", 0.207), 0.201);

    // The glitch is filtered out, never seen by Vivaldi.
    close(v.latency_filter("alice", 1.9), 0.207);
    close(v.latency_filter("alice", 0.203), 0.207);
    close(v.latency_filter("alice", 0.199), 0.203);
    close(v.latency_filter("alice", 0.211), 0.203);

    // Nodes are not coupled.
    close(v.latency_filter("bob", 0.310), 0.310);

    // A node that left is forgotten.
    v.forget("alice");
    close(v.latency_filter("alice", 0.888), 0.888);
}

#[test]
fn bad_coordinates_are_refused_and_a_poisoned_state_resets() {
    let cfg = config(3);
    let mut v = Vivaldi::new(cfg.clone());
    let rtt = Duration::from_millis(250);

    let mut other = origin_of(&cfg);
    other.vec[0] = f64::NAN;
    assert!(!other.is_valid());
    assert_eq!(
        v.update("node", &other, rtt).map(|_| ()),
        Err(UpdateError::Invalid)
    );
    assert!(v.coordinate().is_valid());
    assert_eq!(v.set_coordinate(other.clone()), Err(UpdateError::Invalid));
    assert!(v.coordinate().is_valid());

    other.vec = vec![0.0; 6];
    assert_eq!(
        v.update("node", &other, rtt).map(|_| ()),
        Err(UpdateError::Incompatible)
    );
    assert_eq!(v.set_coordinate(other), Err(UpdateError::Incompatible));
    assert!(v.coordinate().is_valid());

    // Poison the state: the next update resets it.
    v.coord.vec[0] = f64::NAN;
    let c = v.update("node", &origin_of(&cfg), rtt).expect("update");
    assert!(c.is_valid());
    assert_eq!(v.resets(), 1);
}

#[test]
fn apply_force_normalizes_and_respects_the_minimum_height() {
    let mut cfg = config(3);
    cfg.height_min = 0.0;
    let origin = origin_of(&cfg);

    let mut above = origin_of(&cfg);
    above.vec = vec![0.0, 0.0, 2.9];
    let c = apply_force(&origin, cfg.height_min, 5.3, &above);
    close_vec(&c.vec, &[0.0, 0.0, -5.3]);

    // Nothing special about the origin.
    let mut right = origin_of(&cfg);
    right.vec = vec![3.4, 0.0, -5.3];
    let c = apply_force(&c, cfg.height_min, 2.0, &right);
    close_vec(&c.vec, &[-2.0, 0.0, -5.3]);

    // On top of each other: one unit away in a random direction.
    let c = apply_force(&origin, cfg.height_min, 1.0, &origin);
    close(origin.distance_to(&c).expect("compatible"), 1.0);

    // The height moves with the force, and not below the minimum.
    cfg.height_min = 10.0e-6;
    let origin = origin_of(&cfg);
    let c = apply_force(&origin, cfg.height_min, 5.3, &above);
    close_vec(&c.vec, &[0.0, 0.0, -5.3]);
    close(c.height, cfg.height_min + 5.3 * cfg.height_min / 2.9);
    let c = apply_force(&origin, cfg.height_min, -5.3, &above);
    close_vec(&c.vec, &[0.0, 0.0, 5.3]);
    close(c.height, cfg.height_min);
}

#[test]
fn vector_helpers_match_serf() {
    close_vec(
        &diff(&[1.0, -3.0, 3.0], &[-4.0, 5.0, 6.0]),
        &[5.0, -8.0, -3.0],
    );
    close(magnitude(&[0.0, 0.0, 0.0]), 0.0);
    close(magnitude(&[1.0, -2.0, 3.0]), 3.7416573867739413);

    let (a, b) = ([1.0, 2.0, 3.0], [0.5, 0.6, 0.7]);
    let (u, mag) = unit_vector_at(&a, &b);
    close_vec(
        &u,
        &[0.18257418583505536, 0.511207720338155, 0.8398412548412546],
    );
    close(magnitude(&u), 1.0);
    close(mag, magnitude(&diff(&a, &b)));

    let (u, mag) = unit_vector_at(&a, &a);
    close(magnitude(&u), 1.0);
    close(mag, 0.0);
}

#[test]
fn many_observations_converge_on_the_true_round_trip() {
    // Two nodes 10 ms apart, each updating from the other: the estimate ends near 10 ms.
    let mut a = Vivaldi::new(VivaldiConfig::default());
    let mut b = Vivaldi::new(VivaldiConfig::default());
    let rtt = Duration::from_millis(10);
    for _ in 0..200 {
        let cb = b.coordinate();
        a.update("b", &cb, rtt).expect("update");
        let ca = a.coordinate();
        b.update("a", &ca, rtt).expect("update");
    }
    let est = a
        .coordinate()
        .distance_to(&b.coordinate())
        .expect("compatible");
    assert!((est - 0.010).abs() < 0.002, "estimate {est}");
}
