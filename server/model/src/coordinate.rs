//! Network coordinates: a node's position in Serf's Vivaldi space (seconds), as agents report
//! it and the catalog stores it, and the round-trip estimate between two of them. How a
//! coordinate moves with each observed round trip is the agent's (`cluster::coordinate`).

use serde::{Deserialize, Serialize};

/// A Vivaldi coordinate, in Serf's units: `vec`, `adjustment` and `height` in seconds,
/// `error` dimensionless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coordinate {
    /// The Euclidean part.
    pub vec: Vec<f64>,
    /// Confidence in the coordinate: high is unsure.
    pub error: f64,
    /// An offset averaged over recent observations of all nodes.
    pub adjustment: f64,
    /// The non-Euclidean part: the node's access link.
    pub height: f64,
}

impl Coordinate {
    /// A coordinate at the origin of a `dimensionality`-dimensional space, as a node has
    /// before its first observation.
    pub fn origin(dimensionality: usize, error: f64, height: f64) -> Self {
        Coordinate {
            vec: vec![0.0; dimensionality],
            error,
            adjustment: 0.0,
            height,
        }
    }

    /// Whether every component is a finite number (no NaN, no infinity).
    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|f| f.is_finite())
            && self.error.is_finite()
            && self.adjustment.is_finite()
            && self.height.is_finite()
    }

    /// Whether both coordinates have the same dimensionality.
    pub fn is_compatible_with(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// The Vivaldi distance in seconds, heights included, adjustments not.
    pub fn raw_distance_to(&self, other: &Coordinate) -> f64 {
        let sq: f64 = self
            .vec
            .iter()
            .zip(&other.vec)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        sq.sqrt() + self.height + other.height
    }

    /// The estimated round trip to `other`, in seconds: the raw distance plus both
    /// adjustments, unless that sum is not positive (then the raw distance alone). `None`
    /// when the dimensionalities differ.
    pub fn distance_to(&self, other: &Coordinate) -> Option<f64> {
        if !self.is_compatible_with(other) {
            return None;
        }
        let dist = self.raw_distance_to(other);
        let adjusted = dist + self.adjustment + other.adjustment;
        Some(if adjusted > 0.0 { adjusted } else { dist })
    }
}

// `Command` and `QueryResult` are `Eq`. A coordinate holding a NaN is never accepted (see
// `is_valid`), so equality between stored coordinates is reflexive.
impl Eq for Coordinate {}

/// A node's coordinate, as stored in the catalog (Consul's `structs.Coordinate`, without the
/// network segment Muster does not have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCoordinate {
    pub node: String,
    pub coord: Coordinate,
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: f64 = 4.104875150354758;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1.0e-6, "{a} != {b}");
    }

    fn pair() -> (Coordinate, Coordinate) {
        let mut c1 = Coordinate::origin(3, 1.5, 0.0);
        let mut c2 = Coordinate::origin(3, 1.5, 0.0);
        c1.vec = vec![-0.5, 1.3, 2.4];
        c2.vec = vec![1.2, -2.3, 3.4];
        (c1, c2)
    }

    #[test]
    fn distance_to_follows_serf() {
        let (mut c1, mut c2) = pair();
        close(c1.distance_to(&c1).unwrap(), 0.0);
        close(c1.distance_to(&c2).unwrap(), c2.distance_to(&c1).unwrap());
        close(c1.distance_to(&c2).unwrap(), RAW);
        // Negative adjustments are ignored, positive ones count.
        c1.adjustment = -1.0e6;
        close(c1.distance_to(&c2).unwrap(), RAW);
        c1.adjustment = 0.1;
        c2.adjustment = 0.2;
        close(c1.distance_to(&c2).unwrap(), RAW + 0.3);
        // Heights count.
        c1.height = 0.7;
        c2.height = 0.1;
        close(c1.distance_to(&c2).unwrap(), RAW + 0.3 + 0.8);
        // Different dimensionalities have no distance.
        let mut bad = c1.clone();
        bad.vec.push(0.0);
        assert_eq!(c1.distance_to(&bad), None);
    }

    #[test]
    fn raw_distance_ignores_adjustment() {
        let (mut c1, mut c2) = pair();
        close(c1.raw_distance_to(&c1), 0.0);
        close(c1.raw_distance_to(&c2), c2.raw_distance_to(&c1));
        close(c1.raw_distance_to(&c2), RAW);
        c1.adjustment = 1.0e6;
        close(c1.raw_distance_to(&c2), RAW);
        c1.height = 0.7;
        c2.height = 0.1;
        close(c1.raw_distance_to(&c2), RAW + 0.8);
    }

    #[test]
    fn is_valid_rejects_nan_and_infinity_in_every_field() {
        let c = Coordinate::origin(8, 1.5, 10.0e-6);
        for i in 0..c.vec.len() + 3 {
            let with = |f: f64| {
                let mut c = c.clone();
                match i.checked_sub(c.vec.len()) {
                    None => c.vec[i] = f,
                    Some(0) => c.error = f,
                    Some(1) => c.adjustment = f,
                    Some(_) => c.height = f,
                }
                c
            };
            assert!(with(0.0).is_valid(), "field {i}");
            assert!(!with(f64::NAN).is_valid(), "field {i} NaN");
            assert!(!with(f64::INFINITY).is_valid(), "field {i} Inf");
        }
    }

    #[test]
    fn compatibility_is_by_dimensionality() {
        let c1 = Coordinate::origin(3, 1.5, 0.0);
        let c2 = Coordinate::origin(3, 1.5, 0.0);
        let alien = Coordinate::origin(2, 1.5, 0.0);
        assert!(c1.is_compatible_with(&c2) && c2.is_compatible_with(&c1));
        assert!(alien.is_compatible_with(&alien));
        assert!(!c1.is_compatible_with(&alien) && !alien.is_compatible_with(&c2));
    }
}
