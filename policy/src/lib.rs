//! Host-independent policy logic of the edge filter.
