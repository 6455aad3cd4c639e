-- The saga engine records, with the step, whether that step is about to run
-- (`running`), has run (`done`), or is being undone (`undoing`); and how the
-- saga ended.
ALTER TABLE sagas ADD COLUMN phase TEXT NOT NULL DEFAULT 'running';
ALTER TABLE sagas ADD COLUMN outcome TEXT;
