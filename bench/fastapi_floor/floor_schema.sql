-- The shared floor's table, with what a list's manual order needs (a list, a parent, a position),
-- so the tree route can be done the least way too. bench/seed.py fills these columns when they exist.
DROP TABLE IF EXISTS floor_task;
CREATE TABLE floor_task (
  id bigserial PRIMARY KEY,
  user_id text NOT NULL,
  title varchar(255) NOT NULL,
  description varchar(1000),
  completed boolean NOT NULL DEFAULT false,
  priority text NOT NULL DEFAULT 'medium',
  tags text[] NOT NULL DEFAULT '{}',
  due_date timestamptz,
  completed_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  list_id bigint,
  parent_id bigint,
  position text COLLATE "C"
);
CREATE INDEX ON floor_task (user_id, created_at DESC, id DESC);
CREATE INDEX ON floor_task (list_id, position, id) WHERE parent_id IS NULL;
CREATE INDEX ON floor_task (parent_id, position, id);
