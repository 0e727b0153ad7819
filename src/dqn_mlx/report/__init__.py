"""Results for people: the papers' score tables, the results table, plots and videos."""
