//! `json_object!`: `Deserialize` for a Salesforce reply struct, read from a JSON object only.
//!
//! What `#[derive(Deserialize)]` with `#[serde(default)]` on every field gives, through the
//! same serde traits (`Visitor::visit_map`, `MapAccess`), less one thing: derive also reads a
//! struct from a JSON *array* (`visit_seq`), and serde_json calls that path whenever a value
//! starts with `[`, so its code ships once per struct (0.7–2.3 KB of .wasm each, ~7 KB for the
//! replies here) for input Salesforce never sends. Keys are matched exactly (as derive's
//! `rename`), unknown keys are skipped unread (`IgnoredAny`), a repeated key keeps its last
//! value, and a struct starts from its `Default`.

/// `json_object!(Type<'a>, "what it is", { "JsonKey" => field, ... });` (or `Type` when it
/// borrows nothing).
macro_rules! json_object {
    ($ty:ident $(<$lt:lifetime>)?, $what:literal, { $($key:literal => $field:ident),* $(,)? }) => {
        impl<'de $(: $lt, $lt)?> serde::Deserialize<'de> for $ty $(<$lt>)? {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V<T>(std::marker::PhantomData<T>);
                impl<'de $(: $lt, $lt)?> serde::de::Visitor<'de> for V<$ty $(<$lt>)?> {
                    type Value = $ty $(<$lt>)?;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Self::Value, A::Error> {
                        let mut v = <$ty $(<$lt>)?>::default();
                        while let Some($crate::salesforce::BorrowedStr(key)) = map.next_key()? {
                            match key.as_ref() {
                                $($key => v.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(v)
                    }
                }
                d.deserialize_map(V(std::marker::PhantomData))
            }
        }
    };
}
