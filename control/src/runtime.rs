//! The tokio control thread and its bounded channels to the datapath thread.
