"""The only home of SQL: pool, migrations, embedded server, and one module per table family."""
