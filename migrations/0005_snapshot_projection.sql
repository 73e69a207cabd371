-- Which projection drew each snapshot: 'none' (the embedding is 2-D), 'pca' or 'tsne'
-- (proto::SnapshotProjection). Before this migration only PCA existed and `projected` said
-- whether it was used, so existing rows are filled in from that flag. `projected` stays, set
-- for every projection, so older readers keep working.
ALTER TABLE snapshots ADD COLUMN projection TEXT;
UPDATE snapshots SET projection = CASE WHEN projected != 0 THEN 'pca' ELSE 'none' END;
