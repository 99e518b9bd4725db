//! How the program's values travel as D-Bus values: most as themselves,
//! a wire enum (`State`, …) as its name, a label map as a plain `a{ss}`.
//! The property table (`view`) and the spec keys (`spec`) encode and
//! decode through this one trait, so a field's Rust type decides its D-Bus
//! type in one place.

use std::collections::{BTreeMap, HashMap};

use zbus::zvariant::{OwnedValue, Type, Value};

/// A value with a D-Bus form (`Wire`; its `Type` is the signature).
pub trait WireValue: Sized {
    type Wire: Type + Into<Value<'static>> + TryFrom<OwnedValue>;

    fn to_wire(&self) -> Self::Wire;

    /// `None` when the wire value is not one this type can hold (an
    /// unknown state name).
    fn from_wire(wire: Self::Wire) -> Option<Self>;
}

macro_rules! as_itself {
    ($($t:ty),*) => {$(
        impl WireValue for $t {
            type Wire = $t;
            fn to_wire(&self) -> $t {
                self.clone()
            }
            fn from_wire(wire: $t) -> Option<$t> {
                Some(wire)
            }
        }
    )*};
}

as_itself!(
    String,
    Vec<String>,
    bool,
    u32,
    i32,
    u64,
    f64,
    Vec<(u64, bool, String)>
);

/// Labels are sorted inside the program, a plain dictionary on the bus.
impl WireValue for BTreeMap<String, String> {
    type Wire = HashMap<String, String>;

    fn to_wire(&self) -> Self::Wire {
        self.clone().into_iter().collect()
    }

    fn from_wire(wire: Self::Wire) -> Option<Self> {
        Some(wire.into_iter().collect())
    }
}

/// Pressure figures by name, a plain `a{sd}` on the bus.
impl WireValue for BTreeMap<String, f64> {
    type Wire = HashMap<String, f64>;

    fn to_wire(&self) -> Self::Wire {
        self.clone().into_iter().collect()
    }

    fn from_wire(wire: Self::Wire) -> Option<Self> {
        Some(wire.into_iter().collect())
    }
}
