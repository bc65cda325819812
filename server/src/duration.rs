//! Go's duration syntax (`time.ParseDuration`), which Consul's APIs and definitions use: one
//! parser for the HTTP API and the server's prepared queries.

/// Longest duration Go's `time.ParseDuration` accepts: 2^63-1 ns, about 292 years.
pub const MAX_GO_DURATION: std::time::Duration = std::time::Duration::from_nanos(i64::MAX as u64);

/// Parses a Go duration (`10s`, `5m`, `1m30s`, `500ms`, `1h`); a bare `0` is zero. Like Go, a
/// duration over about 292 years (2^63-1 ns) is invalid, so a typo cannot become forever.
pub fn go_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    std::time::Duration::try_from_secs_f64(total)
        .ok()
        .filter(|d| *d <= MAX_GO_DURATION)
}
