-- A random id of this database, made once here. Row ids (workers, attempts, artifacts) restart at 1
-- in a new database, so every lease and report carries this id: a worker that outlived a reset is
-- refused instead of writing into whichever job now has its attempt id.

CREATE TABLE database_meta (
    id   INTEGER PRIMARY KEY CHECK (id = 1),   -- exactly one row
    uuid TEXT    NOT NULL
);
-- A version-4 UUID: 122 random bits, the version nibble 4, the variant nibble 8, 9, a or b.
INSERT INTO database_meta (id, uuid) VALUES (1, lower(
    hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
    || substr('89ab', 1 + abs(random() % 4), 1) || substr(hex(randomblob(2)), 2) || '-'
    || hex(randomblob(6))));
