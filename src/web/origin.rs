//! Origin resolution for the fronts.
