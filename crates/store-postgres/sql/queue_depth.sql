SELECT count(*) FROM work_orders WHERE response IS NULL
