//! OBD-II (SAE J1979): not implemented yet.
