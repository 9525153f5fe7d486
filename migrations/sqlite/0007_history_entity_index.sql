-- Drops state_history_entity_idx. No query looks history up by entity: the
-- auditor reads a tenant's whole history and sorts it, which needs no index.
-- The index cost every effect a write at a random place in a b-tree (one
-- more dirty page per request in each commit), so it is gone until an
-- endpoint that lists one entity's history needs it.
DROP INDEX state_history_entity_idx;
