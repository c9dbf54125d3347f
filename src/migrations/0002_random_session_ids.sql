-- Session ids are chosen by the service (random in [2^32, 2^53)), not counted up by the
-- database: a counted id lets anyone read other clients' sessions. Existing rows keep
-- their small ids, which stay valid; the service never picks an id below 2^32, so the
-- two never collide.
ALTER TABLE sessions ALTER COLUMN id DROP IDENTITY;
