//! Turns compile outputs into the Kubernetes objects the operator applies (key Secrets, shard Secrets).
