-- A random token per attempt, made when the attempt is leased (see `store::batch`). A database
-- restored from a backup keeps its `database_meta.uuid`, so attempt ids leased after the backup
-- was taken are leased again after the restore; the token is new each time, and every request
-- about an attempt must carry it. Attempts leased before this migration keep NULL: they are only
-- accepted from workers that send no token.
ALTER TABLE attempts ADD COLUMN token INTEGER;
