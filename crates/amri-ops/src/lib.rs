//! The amri operator library: everything that turns a clean image into what a scanner or a
//! corruption process measures, and back through the adjoint.
