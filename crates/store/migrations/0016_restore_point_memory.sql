-- Bytes of a restore point's memory state, for the per-project limit: the
-- server's RAM when the point is recorded (what the state can reach), the
-- state's real size once it is written to a file.
ALTER TABLE restore_points ADD COLUMN memory_bytes INTEGER;
