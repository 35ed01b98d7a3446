//! Types generated at build time from `proto/fig.proto` and `proto/binarypayload.proto`.
#![allow(clippy::all, missing_docs)]

pub mod com {
    pub mod atakmap {
        include!(concat!(env!("OUT_DIR"), "/com.atakmap.rs"));
        include!(concat!(env!("OUT_DIR"), "/com.atakmap.FederatedChannel.rs"));
    }
}

pub mod gov {
    pub mod tak {
        pub mod cop {
            pub mod proto {
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/gov.tak.cop.proto.v1.rs"));
                }
            }
        }
    }
}

pub use com::atakmap::*;
