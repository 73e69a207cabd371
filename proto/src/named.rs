//! `named_enum!`: an enum whose variants are spelled as fixed strings on the wire, in files and
//! in the database, with parsing (a clear error naming the accepted values), display, serde
//! through the string, and comparison with a `&str`.

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident, $axis:literal { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result { f.write_str(self.as_str()) }
        }
        impl ::std::str::FromStr for $name {
            type Err = $crate::params::UnknownName;
            fn from_str(s: &str) -> Result<Self, $crate::params::UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::params::UnknownName { axis: $axis, value: s.to_owned(), expected: concat!($($text, " "),+) }),
                }
            }
        }
        impl TryFrom<String> for $name {
            type Error = $crate::params::UnknownName;
            fn try_from(s: String) -> Result<Self, $crate::params::UnknownName> { s.parse() }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String { v.as_str().to_owned() }
        }
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool { self.as_str() == other }
        }
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool { self.as_str() == *other }
        }
    };
}
