//! Ids in `--json` output that every JSON reader gets exactly.
//!
//! Replica ids are random 64-bit numbers; JavaScript, jq and many other
//! readers hold JSON numbers as doubles and silently round anything above
//! 2^53. Every id is therefore printed as a decimal string (the same digits
//! for every command, so ids can be matched across outputs), and any other
//! integer that could not be read exactly is a string too. Counters and
//! sizes stay numbers.

use serde_json::Value;

/// The largest integer a double holds exactly (2^53 - 1).
pub const MAX_SAFE: u64 = (1 << 53) - 1;

/// Keys whose number is a replica id.
const ID_KEYS: &[&str] = &["id", "brick", "peer"];

/// Keys whose value is a list of `[id, number]` pairs.
const PAIR_KEYS: &[&str] = &["vv", "pending_by_peer"];

/// Rewrites `v` in place: ids to strings, unsafe integers to strings.
pub fn stringify_ids(v: &mut Value) {
    walk(v, None);
}

fn walk(v: &mut Value, key: Option<&str>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                walk(child, Some(k.as_str()));
            }
        }
        Value::Array(items) => {
            let pairs = key.is_some_and(|k| PAIR_KEYS.contains(&k));
            for item in items.iter_mut() {
                if let (true, Value::Array(pair)) = (pairs, &mut *item) {
                    if let Some(first) = pair.first_mut() {
                        to_string(first);
                    }
                }
                walk(item, None);
            }
        }
        Value::Number(_) => {
            let id = key.is_some_and(|k| ID_KEYS.contains(&k));
            let unsafe_int = v.as_u64().is_some_and(|n| n > MAX_SAFE)
                || v.as_i64().is_some_and(|n| n.unsigned_abs() > MAX_SAFE);
            if id || unsafe_int {
                to_string(v);
            }
        }
        _ => {}
    }
}

fn to_string(v: &mut Value) {
    if let Value::Number(n) = v {
        if n.is_u64() || n.is_i64() {
            *v = Value::String(n.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_become_strings_and_counters_stay_numbers() {
        let cases = [
            (json!({"id": 5u64}), json!({"id": "5"})),
            (
                json!({"id": u64::MAX, "entries": 3}),
                json!({"id": "18446744073709551615", "entries": 3}),
            ),
            (
                json!({"brick": "h:/p", "detail": {"brick": 9_007_199_254_740_993u64}}),
                json!({"brick": "h:/p", "detail": {"brick": "9007199254740993"}}),
            ),
            (
                json!({"pending_by_peer": [[12u64, 4]], "vv": [[7u64, 2]]}),
                json!({"pending_by_peer": [["12", 4]], "vv": [["7", 2]]}),
            ),
            (json!({"seq": MAX_SAFE}), json!({"seq": MAX_SAFE})),
            (
                json!({"seq": MAX_SAFE + 1}),
                json!({"seq": "9007199254740992"}),
            ),
            (
                json!([{"peer": 1u64, "rate": 1.5}]),
                json!([{"peer": "1", "rate": 1.5}]),
            ),
            (json!({"id": "already"}), json!({"id": "already"})),
        ];
        for (mut input, want) in cases {
            stringify_ids(&mut input);
            assert_eq!(input, want);
        }
    }
}
