//! Value types: the shapes a column, a reducer argument or a struct field can take.
//!
//! A [`ValueType`] describes how a [`Value`](crate::Value) is laid out in the binary
//! encoding (see [`crate::encoding`]). Types are *structural*: a user struct is a
//! [`ProductType`] (named fields in order), a user enum is a [`SumType`] (named variants,
//! each with a payload type; a unit variant carries the empty product). `Option<T>` is
//! its own type rather than a sum so that storage and SDKs can treat it specially.
//!
//! A type is *fixed-size* when every value of it encodes to the same number of bytes.
//! Storage keeps fixed-size columns in plain arrays and everything else in an arena, so
//! this property ([`ValueType::fixed_size`]) decides a column's physical layout.

/// The deepest nesting of types accepted anywhere. Decoding recurses once per level, so
/// this bounds stack use for every value, however hostile its bytes.
pub const TYPE_DEPTH_MAX: usize = 32;

/// A value's type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValueType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    U128,
    I8,
    I16,
    I32,
    I64,
    I128,
    F32,
    F64,
    /// UTF-8 text.
    String,
    /// Raw bytes.
    Bytes,
    /// A 32-byte identity of a client or of a module's owner.
    Identity,
    /// A 16-byte id of one connection of a client.
    ConnectionId,
    /// Microseconds since the Unix epoch, signed.
    Timestamp,
    /// A signed span of time in microseconds.
    TimeDuration,
    /// A sequence of values of one type.
    Array(Box<ValueType>),
    /// An optional value.
    Option(Box<ValueType>),
    /// A user struct: named fields in order.
    Product(ProductType),
    /// A user enum: named variants, each with a payload.
    Sum(SumType),
}

/// A struct type: named fields, encoded one after the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ProductType {
    pub fields: Vec<Field>,
}

/// One named field of a [`ProductType`] or one variant of a [`SumType`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: String,
    pub ty: ValueType,
}

/// An enum type: a one-byte tag chooses the variant, then its payload follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SumType {
    pub variants: Vec<Field>,
}

/// The most variants a [`SumType`] may have: the tag is one byte.
pub const SUM_VARIANTS_MAX: usize = 256;

/// Why a type is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("types nest deeper than {TYPE_DEPTH_MAX} levels")]
    TooDeep,
    #[error("enum has {0} variants; at most {SUM_VARIANTS_MAX} fit the one-byte tag")]
    TooManyVariants(usize),
    #[error("enum has no variants, so no value of it can exist")]
    EmptySum,
    #[error("array of a zero-sized type (such as the empty struct) cannot be stored")]
    ZeroSizedArrayElement,
    #[error("field or variant `{0}` appears twice")]
    DuplicateName(String),
}

impl ProductType {
    pub fn new(fields: impl IntoIterator<Item = (impl Into<String>, ValueType)>) -> Self {
        let fields = fields.into_iter().map(|(name, ty)| Field { name: name.into(), ty });
        ProductType { fields: fields.collect() }
    }
}

impl SumType {
    pub fn new(variants: impl IntoIterator<Item = (impl Into<String>, ValueType)>) -> Self {
        let variants = variants.into_iter().map(|(name, ty)| Field { name: name.into(), ty });
        SumType { variants: variants.collect() }
    }
}

impl ValueType {
    /// The unit type: the empty struct, payload of enum variants that carry nothing.
    pub fn unit() -> ValueType {
        ValueType::Product(ProductType::default())
    }

    pub fn array(element: ValueType) -> ValueType {
        ValueType::Array(Box::new(element))
    }

    pub fn option(inner: ValueType) -> ValueType {
        ValueType::Option(Box::new(inner))
    }

    /// The encoded size of every value of this type, or `None` when values of it vary
    /// in size. Sums are fixed-size when all their variants have the same fixed size.
    pub fn fixed_size(&self) -> Option<usize> {
        use ValueType::*;
        match self {
            Bool | U8 | I8 => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 | Timestamp | TimeDuration => Some(8),
            U128 | I128 | ConnectionId => Some(16),
            Identity => Some(32),
            String | Bytes | Array(_) | Option(_) => None,
            Product(p) => p.fields.iter().map(|f| f.ty.fixed_size()).sum(),
            Sum(s) => {
                let first = s.variants.first()?.ty.fixed_size()?;
                let same = s.variants.iter().all(|v| v.ty.fixed_size() == Some(first));
                same.then_some(1 + first)
            }
        }
    }

    /// The fewest bytes any value of this type encodes to.
    pub fn min_size(&self) -> usize {
        use ValueType::*;
        match self {
            String | Bytes | Array(_) => 4,
            Option(_) => 1,
            Product(p) => p.fields.iter().map(|f| f.ty.min_size()).sum(),
            Sum(s) => 1 + s.variants.iter().map(|v| v.ty.min_size()).min().unwrap_or(0),
            fixed => fixed.fixed_size().unwrap_or(0),
        }
    }

    /// Whether values of this type are integers, the types a sequence can fill.
    pub fn is_integer(&self) -> bool {
        use ValueType::*;
        matches!(self, U8 | U16 | U32 | U64 | U128 | I8 | I16 | I32 | I64 | I128)
    }

    /// Checks the rules every type must follow; see [`TypeError`].
    pub fn validate(&self) -> Result<(), TypeError> {
        // Depth first, with recursion bounded by the limit: the other checks (and
        // `min_size`) recurse without one.
        if self.deeper_than(TYPE_DEPTH_MAX) {
            return Err(TypeError::TooDeep);
        }
        self.validate_at(1)
    }

    fn deeper_than(&self, levels: usize) -> bool {
        let Some(below) = levels.checked_sub(1) else { return true };
        match self {
            ValueType::Array(inner) | ValueType::Option(inner) => inner.deeper_than(below),
            ValueType::Product(ProductType { fields }) | ValueType::Sum(SumType { variants: fields }) => {
                fields.iter().any(|f| f.ty.deeper_than(below))
            }
            _ => false,
        }
    }

    fn validate_at(&self, depth: usize) -> Result<(), TypeError> {
        if depth > TYPE_DEPTH_MAX {
            return Err(TypeError::TooDeep);
        }
        match self {
            ValueType::Array(element) => {
                if element.min_size() == 0 {
                    return Err(TypeError::ZeroSizedArrayElement);
                }
                element.validate_at(depth + 1)
            }
            ValueType::Option(inner) => inner.validate_at(depth + 1),
            ValueType::Product(p) => validate_fields(&p.fields, depth),
            ValueType::Sum(s) => {
                if s.variants.is_empty() {
                    return Err(TypeError::EmptySum);
                }
                if s.variants.len() > SUM_VARIANTS_MAX {
                    return Err(TypeError::TooManyVariants(s.variants.len()));
                }
                validate_fields(&s.variants, depth)
            }
            _ => Ok(()),
        }
    }
}

fn validate_fields(fields: &[Field], depth: usize) -> Result<(), TypeError> {
    for (i, field) in fields.iter().enumerate() {
        if fields[..i].iter().any(|f| f.name == field.name) {
            return Err(TypeError::DuplicateName(field.name.clone()));
        }
        field.ty.validate_at(depth + 1)?;
    }
    Ok(())
}

/// Types print as a module author writes them: `u32`, `String`, `Vec<u8>`,
/// `Option<f32>`, `{ x: f32, y: f32 }`, `enum { Idle, Moving({ dx: f32 }) }`.
impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use ValueType::*;
        let name = match self {
            Bool => "bool",
            U8 => "u8",
            U16 => "u16",
            U32 => "u32",
            U64 => "u64",
            U128 => "u128",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            I128 => "i128",
            F32 => "f32",
            F64 => "f64",
            String => "String",
            Bytes => "Bytes",
            Identity => "Identity",
            ConnectionId => "ConnectionId",
            Timestamp => "Timestamp",
            TimeDuration => "TimeDuration",
            Array(inner) => return write!(f, "Vec<{inner}>"),
            Option(inner) => return write!(f, "Option<{inner}>"),
            Product(p) if p.fields.is_empty() => "()",
            Product(p) => {
                let fields: Vec<std::string::String> =
                    p.fields.iter().map(|x| format!("{}: {}", x.name, x.ty)).collect();
                return write!(f, "{{ {} }}", fields.join(", "));
            }
            Sum(s) => {
                let unit = ValueType::unit();
                let variants: Vec<std::string::String> = s
                    .variants
                    .iter()
                    .map(|v| if v.ty == unit { v.name.clone() } else { format!("{}({})", v.name, v.ty) })
                    .collect();
                return write!(f, "enum {{ {} }}", variants.join(", "));
            }
        };
        f.write_str(name)
    }
}
