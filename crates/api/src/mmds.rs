//! The MMDS data store: a JSON object kept by the VMM, replaced by `PUT /mmds`, merged
//! by `PATCH /mmds` (RFC 7396 JSON merge patch, as Firecracker) and bounded by
//! `--mmds-size-limit` (413 past it, leaving the store unchanged).

use serde_json::Value;

use crate::error::VmmActionError;

/// The store and its size limit in bytes of serialized JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct MmdsStore {
    data: Option<Value>,
    limit: usize,
}

fn too_big() -> VmmActionError {
    VmmActionError::MmdsLimitExceeded("The MMDS patch request doesn't fit.".into())
}

fn must_be_object(v: &Value) -> Result<(), VmmActionError> {
    if v.is_object() {
        Ok(())
    } else {
        Err(VmmActionError::Mmds(
            "The MMDS data store must be a JSON object.".into(),
        ))
    }
}

/// RFC 7396: `null` removes a key, objects merge recursively, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl MmdsStore {
    pub fn new(limit: usize) -> Self {
        MmdsStore { data: None, limit }
    }

    fn fits(&self, v: &Value) -> bool {
        serde_json::to_string(v).is_ok_and(|s| s.len() <= self.limit)
    }

    /// The contents; `{}` before anything was stored, as Firecracker answers.
    pub fn get(&self) -> Value {
        self.data
            .clone()
            .unwrap_or_else(|| Value::Object(Default::default()))
    }

    pub fn put(&mut self, v: Value) -> Result<(), VmmActionError> {
        must_be_object(&v)?;
        if !self.fits(&v) {
            return Err(too_big());
        }
        self.data = Some(v);
        Ok(())
    }

    pub fn patch(&mut self, patch: Value) -> Result<(), VmmActionError> {
        must_be_object(&patch)?;
        let Some(current) = &self.data else {
            return Err(VmmActionError::Mmds(
                "The MMDS data store is not initialized.".into(),
            ));
        };
        let mut next = current.clone();
        merge_patch(&mut next, &patch);
        if !self.fits(&next) {
            return Err(too_big());
        }
        self.data = Some(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn put_patch_get() {
        let mut s = MmdsStore::new(1000);
        assert_eq!(s.get(), json!({}));
        assert!(matches!(
            s.patch(json!({"a":1})),
            Err(VmmActionError::Mmds(_))
        ));
        s.put(json!({"a": {"b": 1, "c": 2}, "d": 3})).unwrap();
        s.patch(json!({"a": {"b": null, "e": [1]}, "d": null, "f": "x"}))
            .unwrap();
        assert_eq!(s.get(), json!({"a": {"c": 2, "e": [1]}, "f": "x"}));
        assert!(s.put(json!([1])).is_err());
        assert!(s.patch(json!("x")).is_err());
    }

    #[test]
    fn the_limit_is_enforced_and_leaves_the_store_alone() {
        let mut s = MmdsStore::new(20);
        s.put(json!({"k": "v"})).unwrap();
        let e = s.put(json!({"k": "x".repeat(30)})).unwrap_err();
        assert_eq!(e.status(), 413);
        assert_eq!(
            e.to_string(),
            "MMDS limit exceeded error: The MMDS patch request doesn't fit."
        );
        assert_eq!(
            s.patch(json!({"k2": "y".repeat(30)})).unwrap_err().status(),
            413
        );
        assert_eq!(s.get(), json!({"k": "v"}));
    }
}
