//! Response Policy Zones: serving the rules in force as an RPZ (`serve`).

pub mod serve;
