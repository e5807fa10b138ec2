//! The io_uring UDP backend and the eventfd waker.
