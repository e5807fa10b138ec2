//! The relay switch: per-room MAC table, flooding and L2 safety filters.
