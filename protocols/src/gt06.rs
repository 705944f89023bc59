//! gt06: not implemented yet (placeholder so the registry compiles).

use crate::codec::{Codec, DeviceEncoder, Transport};

pub fn codec(_transport: Transport) -> Option<Box<dyn Codec>> {
    None
}

pub fn device(_transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    None
}
