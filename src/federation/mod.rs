//! TAK Server federation. Messages of `fig.proto` (shared by v1 frames and the v2 gRPC
//! service), GeoEvent <-> CotEvent conversion, and the v1 framing.

pub mod convert;
pub mod fig;
pub mod link;
pub mod probe;
pub mod v1;
pub mod v2;
