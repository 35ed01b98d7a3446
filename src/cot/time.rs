//! CoT timestamps: xs:dateTime in UTC, carried as milliseconds since the Unix epoch
//! (the resolution of TAK protocol v1).
//!
//! Parsing is lenient the way real traffic needs: any number of fractional digits
//! (truncated to ms, as commo does), `Z`, a numeric offset or no zone at all (read as UTC).
//! Formatting always writes `YYYY-MM-DDTHH:MM:SS.mmmZ`, which every TAK client accepts.

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CotTime(pub i64);

impl CotTime {
    pub fn from_millis(ms: i64) -> Self {
        CotTime(ms)
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        CotTime(d.as_millis() as i64)
    }
    pub fn plus_secs(self, s: i64) -> Self {
        CotTime(self.0.saturating_add(s.saturating_mul(1000)))
    }

    /// Parses an xs:dateTime. Returns `None` when it is not one.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.trim().as_bytes();
        if b.len() < 19 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let mut v = 0i64;
            for &c in &b[r] {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + (c - b'0') as i64;
            }
            Some(v)
        };
        if b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 24 || mi > 59 || sec > 60 {
            return None;
        }
        let mut i = 19;
        let mut ms = 0i64;
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    ms = ms * 10 + (b[i] - b'0') as i64;
                }
                i += 1;
            }
            let digits = i - start;
            if digits == 0 {
                return None;
            }
            for _ in digits..3 {
                ms *= 10;
            }
        }
        let mut offset_min = 0i64;
        if i < b.len() {
            match b[i] {
                b'Z' | b'z' if i + 1 == b.len() => {}
                b'+' | b'-' if b.len() == i + 6 && b[i + 3] == b':' => {
                    let sign = if b[i] == b'-' { -1 } else { 1 };
                    offset_min = sign * (num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?);
                }
                _ => return None,
            }
        }
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
        Some(CotTime(secs * 1000 + ms))
    }

    /// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ` into `out`.
    pub fn write_to(self, out: &mut Vec<u8>) {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
        let y = y.clamp(0, 9999);
        let mut tmp = *b"0000-00-00T00:00:00.000Z";
        let put = |t: &mut [u8; 24], at: usize, width: usize, mut v: i64| {
            for k in (0..width).rev() {
                t[at + k] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(&mut tmp, 0, 4, y);
        put(&mut tmp, 5, 2, mo);
        put(&mut tmp, 8, 2, d);
        put(&mut tmp, 11, 2, h);
        put(&mut tmp, 14, 2, mi);
        put(&mut tmp, 17, 2, s);
        put(&mut tmp, 20, 3, ms);
        out.extend_from_slice(&tmp);
    }
}

impl fmt::Display for CotTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = Vec::with_capacity(24);
        self.write_to(&mut v);
        f.write_str(std::str::from_utf8(&v).map_err(|_| fmt::Error)?)
    }
}

impl serde::Serialize for CotTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// Howard Hinnant's civil calendar algorithms (public domain description).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fraction_width() {
        let base = CotTime::parse("2020-02-08T18:10:44Z").unwrap();
        assert_eq!(base.0, 1_581_185_444_000);
        assert_eq!(CotTime::parse("2020-02-08T18:10:44.1Z").unwrap().0, base.0 + 100);
        assert_eq!(CotTime::parse("2020-02-08T18:10:44.12Z").unwrap().0, base.0 + 120);
        assert_eq!(CotTime::parse("2020-02-08T18:10:44.123Z").unwrap().0, base.0 + 123);
        assert_eq!(CotTime::parse("2020-02-08T18:10:44.123999Z").unwrap().0, base.0 + 123);
        assert_eq!(CotTime::parse("2020-02-08T18:10:44.123456789Z").unwrap().0, base.0 + 123);
    }

    #[test]
    fn offsets_and_missing_zone() {
        let z = CotTime::parse("2020-02-08T18:10:44Z").unwrap();
        assert_eq!(CotTime::parse("2020-02-08T18:10:44").unwrap(), z);
        assert_eq!(CotTime::parse("2020-02-08T19:10:44+01:00").unwrap(), z);
        assert_eq!(CotTime::parse("2020-02-08T17:10:44.000-01:00").unwrap(), z);
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "2020-02-08", "2020-02-08T18:10:44.Z", "2020-13-08T18:10:44Z", "2020-02-08T18:10:44Zjunk", "abcd-02-08T18:10:44Z"] {
            assert!(CotTime::parse(s).is_none(), "{s}");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        for ms in [0i64, 1, 999, 1_581_185_444_123, 951_782_400_000 /* 2000-02-29 */, 4_102_444_799_999] {
            let s = CotTime(ms).to_string();
            assert_eq!(CotTime::parse(&s), Some(CotTime(ms)), "{s}");
        }
        assert_eq!(CotTime(1_581_185_444_123).to_string(), "2020-02-08T18:10:44.123Z");
    }
}
