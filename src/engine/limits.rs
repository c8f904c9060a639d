//! A worker's own `[recycle]` limits: the configured `max_connections` and `max_age`, each moved
//! by the worker's share of the jitter (gunicorn's `max_requests_jitter`), so that workers started
//! together are not all recycled together. Drawn once, when the worker starts, from a seed the
//! shell gives.

use std::time::Duration;

use super::mix::unit;
use crate::config::RecycleConfig;

/// One worker's own limits: the configured ones moved by its share of the jitter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub connections: Option<u64>,
    pub age: Option<Duration>,
}

/// The limits of a worker, from the configured ones and a random `seed` (the shell draws it):
/// each moved by the same factor, uniform in `1 ± jitter`.
pub fn limits(config: &RecycleConfig, seed: u64) -> Limits {
    let factor = 1.0 + config.jitter * (2.0 * unit(seed) - 1.0);
    Limits {
        connections: config
            .max_connections
            .map(|n| ((n as f64 * factor).round() as u64).max(1)),
        age: config.max_age.map(|age| age.mul_f64(factor)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(connections: u64, age_secs: u64, jitter: f64) -> RecycleConfig {
        RecycleConfig {
            max_connections: Some(connections),
            max_memory: None,
            max_age: Some(Duration::from_secs(age_secs)),
            jitter,
        }
    }

    #[test]
    fn each_worker_gets_its_own_limits_within_the_jitter() {
        let c = config(1000, 3600, 0.1);
        let all: Vec<Limits> = (4000..5000).map(|pid| limits(&c, pid)).collect();
        let conns: Vec<u64> = all.iter().map(|l| l.connections.unwrap()).collect();
        assert!(
            conns.iter().all(|&n| (900..=1100).contains(&n)),
            "{conns:?}"
        );
        // Spread over the whole range, not bunched: consecutive pids differ.
        assert!(conns.iter().any(|&n| n < 920) && conns.iter().any(|&n| n > 1080));
        let mean = conns.iter().sum::<u64>() as f64 / conns.len() as f64;
        assert!((990.0..1010.0).contains(&mean), "{mean}");
        for l in &all {
            let age = l.age.unwrap().as_secs_f64();
            assert!((3240.0..=3960.0).contains(&age), "{age}");
        }
        // No jitter: exactly the configured values.
        let exact = limits(&config(1000, 60, 0.0), 12345);
        assert_eq!(exact.connections, Some(1000));
        assert_eq!(exact.age, Some(Duration::from_secs(60)));
    }
}
