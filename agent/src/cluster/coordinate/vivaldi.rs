//! Serf's Vivaldi client: this node's coordinate, moved by each observed round trip to
//! another node (a per-node median filter, then Vivaldi's spring force, the adjustment
//! window and a little gravity towards the origin), with Serf's tuning.

use std::collections::HashMap;
use std::time::Duration;

use muster_server::model::Coordinate;
use rand::Rng;

/// Serf's `coordinate.Config`, with its defaults.
#[derive(Debug, Clone)]
pub(crate) struct VivaldiConfig {
    /// Dimensions of the Euclidean part.
    pub(crate) dimensionality: usize,
    /// The error of a node with no observation yet, and the cap on the error.
    pub(crate) error_max: f64,
    /// How much one observation may move the error.
    pub(crate) ce: f64,
    /// How much one observation may move the coordinate.
    pub(crate) cc: f64,
    /// Observations averaged into the adjustment term (0 disables it).
    pub(crate) adjustment_window: usize,
    /// The least height, in seconds.
    pub(crate) height_min: f64,
    /// Round trips per node whose median is used.
    pub(crate) latency_filter_size: usize,
    /// How strongly coordinates are pulled back towards the origin.
    pub(crate) gravity_rho: f64,
}

impl Default for VivaldiConfig {
    fn default() -> Self {
        VivaldiConfig {
            dimensionality: 8,
            error_max: 1.5,
            ce: 0.25,
            cc: 0.25,
            adjustment_window: 20,
            height_min: 10.0e-6,
            latency_filter_size: 3,
            gravity_rho: 150.0,
        }
    }
}

/// Below this, two positions are on top of each other (Serf's `zeroThreshold`).
const ZERO: f64 = 1.0e-6;

/// Round trips beyond this are refused as measurement errors.
const MAX_RTT: Duration = Duration::from_secs(10);

/// Why an observation was refused; the coordinate is left as it was.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UpdateError {
    Incompatible,
    Invalid,
    RttOutOfRange,
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpdateError::Incompatible => "dimensions aren't compatible",
            UpdateError::Invalid => "coordinate is invalid",
            UpdateError::RttOutOfRange => "round trip time not in valid range",
        })
    }
}

/// This node's coordinate and the state that moves it.
pub(crate) struct Vivaldi {
    coord: Coordinate,
    origin: Coordinate,
    config: VivaldiConfig,
    adjustment_index: usize,
    adjustment_samples: Vec<f64>,
    latency_samples: HashMap<String, Vec<f64>>,
    /// Times the coordinate became invalid and was reset to the origin.
    resets: u64,
}

impl Vivaldi {
    pub(crate) fn new(config: VivaldiConfig) -> Self {
        let origin = origin(&config);
        Vivaldi {
            coord: origin.clone(),
            origin,
            adjustment_index: 0,
            adjustment_samples: vec![0.0; config.adjustment_window],
            latency_samples: HashMap::new(),
            resets: 0,
            config,
        }
    }

    pub(crate) fn coordinate(&self) -> Coordinate {
        self.coord.clone()
    }

    pub(crate) fn resets(&self) -> u64 {
        self.resets
    }

    /// Forces the coordinate to a known state.
    #[cfg(test)]
    pub(crate) fn set_coordinate(&mut self, c: Coordinate) -> Result<(), UpdateError> {
        self.check(&c)?;
        self.coord = c;
        Ok(())
    }

    /// Forgets the round trips kept for a node that left.
    pub(crate) fn forget(&mut self, node: &str) {
        self.latency_samples.remove(node);
    }

    /// The estimated round trip to `other`, in seconds.
    #[cfg(test)]
    pub(crate) fn distance_to(&self, other: &Coordinate) -> Option<f64> {
        self.coord.distance_to(other)
    }

    fn check(&self, other: &Coordinate) -> Result<(), UpdateError> {
        if !self.coord.is_compatible_with(other) {
            return Err(UpdateError::Incompatible);
        }
        if !other.is_valid() {
            return Err(UpdateError::Invalid);
        }
        Ok(())
    }

    /// Takes one round trip to `node`, whose coordinate is `other`, and returns the updated
    /// coordinate.
    pub(crate) fn update(
        &mut self,
        node: &str,
        other: &Coordinate,
        rtt: Duration,
    ) -> Result<Coordinate, UpdateError> {
        self.check(other)?;
        if rtt > MAX_RTT {
            return Err(UpdateError::RttOutOfRange);
        }
        let rtt = self.latency_filter(node, rtt.as_secs_f64());
        self.update_vivaldi(other, rtt);
        self.update_adjustment(other, rtt);
        self.update_gravity();
        if !self.coord.is_valid() {
            self.resets += 1;
            self.coord = origin(&self.config);
        }
        Ok(self.coord.clone())
    }

    /// A moving median over the node's last few round trips, in seconds.
    fn latency_filter(&mut self, node: &str, rtt: f64) -> f64 {
        let samples = self.latency_samples.entry(node.to_string()).or_default();
        samples.push(rtt);
        if samples.len() > self.config.latency_filter_size {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    fn update_vivaldi(&mut self, other: &Coordinate, rtt: f64) {
        let c = &self.config;
        let dist = self.coord.distance_to(other).unwrap_or_default();
        let rtt = rtt.max(ZERO);
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO);
        let weight = self.coord.error / total_error;
        self.coord.error =
            (c.ce * weight * wrongness + self.coord.error * (1.0 - c.ce * weight)).min(c.error_max);
        let force = c.cc * weight * (rtt - dist);
        self.coord = apply_force(&self.coord, c.height_min, force, other);
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        let window = self.config.adjustment_window;
        if window == 0 {
            return;
        }
        // The adjustment terms themselves do not figure in: the raw distance.
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance_to(other);
        self.adjustment_index = (self.adjustment_index + 1) % window;
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coord.adjustment = sum / (2.0 * window as f64);
    }

    fn update_gravity(&mut self) {
        let dist = self.origin.distance_to(&self.coord).unwrap_or_default();
        let force = -(dist / self.config.gravity_rho).powi(2);
        self.coord = apply_force(&self.coord, self.config.height_min, force, &self.origin);
    }
}

fn origin(c: &VivaldiConfig) -> Coordinate {
    Coordinate::origin(c.dimensionality, c.error_max, c.height_min)
}

/// `c` pushed by `force` (seconds) away from `other` (towards it when negative); the height
/// moves in proportion and stays at least `height_min`.
pub(crate) fn apply_force(
    c: &Coordinate,
    height_min: f64,
    force: f64,
    other: &Coordinate,
) -> Coordinate {
    let mut ret = c.clone();
    let (unit, mag) = unit_vector_at(&c.vec, &other.vec);
    for (x, u) in ret.vec.iter_mut().zip(&unit) {
        *x += u * force;
    }
    if mag > ZERO {
        ret.height = ((ret.height + other.height) * force / mag + ret.height).max(height_min);
    }
    ret
}

fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn magnitude(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The unit vector pointing at `a` from `b`, and their distance. Positions on top of each
/// other give a random direction and distance 0.
fn unit_vector_at(a: &[f64], b: &[f64]) -> (Vec<f64>, f64) {
    let mut ret = diff(a, b);
    let mag = magnitude(&ret);
    if mag > ZERO {
        return (ret.iter().map(|x| x / mag).collect(), mag);
    }
    let mut rng = rand::rng();
    for x in ret.iter_mut() {
        *x = rng.random::<f64>() - 0.5;
    }
    let mag = magnitude(&ret);
    if mag > ZERO {
        return (ret.iter().map(|x| x / mag).collect(), 0.0);
    }
    let mut ret = vec![0.0; ret.len()];
    if let Some(first) = ret.first_mut() {
        *first = 1.0;
    }
    (ret, 0.0)
}

#[cfg(test)]
#[path = "vivaldi_tests.rs"]
mod tests;
