//! The plan of interface changes (address, mask, MTU, routes, metric) and their undo, as pure data.
