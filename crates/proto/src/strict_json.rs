//! JSON parsing for the listener, in one linear pass: it refuses an object with the same key
//! twice (serde_json's `Value` keeps the last one, while the enclave's typed parse refuses the
//! order), and it refuses more values than a budget, so that a body of tiny containers (`[[]]`
//! repeated: two bytes each, and far more in memory) cannot cost many times its size.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `text` as JSON with at most `max_values` values (every scalar, array and object counts
/// one), refusing duplicate keys at any depth; serde_json's nesting limit of 128 applies.
///
/// # Errors
/// serde_json's error, with `duplicate key "name"` for a repeated key and `more than N JSON
/// values` past the budget.
pub(crate) fn from_str(text: &str, max_values: usize) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let budget = Budget { left: Cell::new(max_values), max: max_values };
    let value = Strict(&budget).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// How many more values may be read.
struct Budget {
    left: Cell<usize>,
    max: usize,
}

impl Budget {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!("more than {} JSON values", self.max))),
        }
    }
}

/// Reads one value, strictly, within the budget.
#[derive(Clone, Copy)]
struct Strict<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        self.0.take()?;
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.take()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_serde_json_without_duplicates() {
        let text = r#"{"a": [1, -2, 3.5, 18446744073709551615, "x\u00e9", null, true, {}], "b": {"c": []}}"#;
        assert_eq!(
            from_str(text, 1000).expect("valid"),
            serde_json::from_str::<Value>(text).expect("valid")
        );
        // Key order is kept.
        let keys: Vec<String> = from_str(r#"{"z": 1, "a": 2}"#, 3)
            .expect("valid")
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["z", "a"]);
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for text in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"params": {"inData": [{"index": 0, "index": 1}]}}"#,
            r#"[{"x": {"y": 1, "y": 1}}]"#,
        ] {
            let error = from_str(text, 1000).expect_err(text);
            assert!(error.to_string().starts_with("duplicate key"), "{error}");
        }
        assert!(from_str(r#"{"a": {"a": 1}}"#, 3).is_ok(), "the same key at two depths is fine");
    }

    #[test]
    fn trailing_garbage_and_deep_nesting_are_refused() {
        assert!(from_str("{} x", 1000).is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(from_str(&deep, 1000).is_err(), "serde_json's recursion limit applies");
    }

    #[test]
    fn the_value_budget_counts_every_value() {
        // An object, an array, and three scalars: five values.
        let text = r#"{"a": [1, "x", null]}"#;
        assert!(from_str(text, 5).is_ok());
        let error = from_str(text, 4).expect_err("over the budget");
        assert!(error.to_string().starts_with("more than 4 JSON values"), "{error}");
        let tiny = format!("[{}[]]", "[], ".repeat(100_000));
        assert!(from_str(&tiny, 1000).is_err(), "tiny containers count too");
    }
}
