-- Legends need class names (digits, Fashion-MNIST items, face ids) next to the labels of a snapshot,
-- and the dashboard reads per-epoch evaluation metrics by job and epoch.

ALTER TABLE snapshots ADD COLUMN class_names TEXT NOT NULL DEFAULT '[]';   -- JSON array, index = label
CREATE INDEX metrics_by_job_epoch ON metrics (job_id, epoch, name);
