//! Times for people: the local time zone, to the second, as
//! `2026-12-05 01:40:00 +0100`.

/// Formats seconds since the epoch in the local time zone.
pub fn local_secs(secs: i64) -> String {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: localtime_r fills the tm we own from a valid time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return format!("@{secs}");
    }
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off.abs() / 60,
        off.abs() % 60
    )
}

/// Formats milliseconds since the epoch in the local time zone.
pub fn local_ms(ms: u64) -> String {
    local_secs((ms / 1000) as i64)
}

/// Formats nanoseconds since the epoch (file mtimes) in the local time
/// zone, with the nanoseconds when there are any.
pub fn local_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let s = local_secs(secs);
    if nanos == 0 {
        return s;
    }
    // Put the fraction after the seconds, before the zone.
    match s.rsplit_once(' ') {
        Some((time, zone)) => format!("{time}.{nanos:09} {zone}"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats() {
        extern "C" {
            fn tzset();
        }
        std::env::set_var("TZ", "UTC");
        // SAFETY: tzset(3) rereads TZ; no other test formats times.
        unsafe { tzset() };
        let cases = [
            (0i64, "1970-01-01 00:00:00 +0000"),
            (1_764_898_800, "2025-12-05 01:40:00 +0000"),
        ];
        for (secs, want) in cases {
            assert_eq!(local_secs(secs), want);
        }
        assert_eq!(
            local_ns(1_500_000_000),
            "1970-01-01 00:00:01.500000000 +0000"
        );
        assert_eq!(local_ms(2_000), "1970-01-01 00:00:02 +0000");
    }
}
