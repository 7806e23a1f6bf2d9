"""skein.python_refs: what a Python consumer reads, found with libcst (issue 21, first step).

Small in-file fixtures for each pattern, then the public Python code of tests/material.py:
every file parses and round-trips, and named files give the findings read off them by hand.
"""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest

import material
import python_material
from skein.python_refs import find_python_refs


def refs(code: str):
    return find_python_refs(textwrap.dedent(code))


def one(code: str):
    found = refs(code).findings
    assert len(found) == 1, found
    return found[0]


def literal_at(code: str, span: tuple[int, int]) -> str:
    return textwrap.dedent(code).encode("utf-8")[span[0]:span[1]].decode("utf-8")


# -- (a) SQL in strings passed to database calls ----------------------------------------

@pytest.mark.parametrize("call, code", [
    ("cursor.execute", 'cursor.execute("SELECT a FROM s.t")'),
    ("duckdb.sql", 'duckdb.sql("SELECT a FROM s.t")'),
    ("con.execute", 'con.execute("SELECT a FROM s.t", [1])'),
    ("con.sql", "con.sql('''SELECT a FROM s.t''')"),
    ("pd.read_sql", 'pd.read_sql("SELECT a FROM s.t", engine)'),
    ("pd.read_sql_query", 'pd.read_sql_query("SELECT a FROM s.t", con=engine)'),
    ("spark.sql", 'spark.sql("SELECT a FROM s.t")'),
    ("sqlalchemy.text", 'conn.execute(sqlalchemy.text("SELECT a FROM s.t"))'),
    ("text", 'conn.execute(text("SELECT a FROM s.t"))'),
    ("pl.read_database", 'pl.read_database("SELECT a FROM s.t", connection=c)'),
    ("hook.get_records", 'hook.get_records("SELECT a FROM s.t")'),
    ("hook.get_pandas_df", 'hook.get_pandas_df("SELECT a FROM s.t")'),
    ("PostgresHook.run", 'PostgresHook().run("SELECT a FROM s.t")'),
    ("SQLExecuteQueryOperator(sql=)", 'SQLExecuteQueryOperator(task_id="x", sql="SELECT a FROM s.t")'),
])
def test_sql_string_in_each_database_call(call, code):
    found = one(code)
    assert (found.kind, found.call, found.text, found.resolved, found.tables) == \
        ("sql", call, "SELECT a FROM s.t", True, ("s.t",))
    assert literal_at(code, found.spans[0]).strip("'\"") == "SELECT a FROM s.t"
    assert (found.line, found.column) == (1, code.index(call.split("(")[0].split(".")[0]))


def test_sql_keyword_list_and_template_file():
    found = refs('''
        op = SQLExecuteQueryOperator(task_id="t", sql=["DELETE FROM s.a", "INSERT INTO s.a SELECT * FROM s.b"])
        tpl = SQLExecuteQueryOperator(task_id="u", sql="create_table.sql")
    ''').findings
    assert [(f.kind, f.line, f.text, f.tables) for f in found] == [
        ("sql", 2, "DELETE FROM s.a", ("s.a",)),
        ("sql", 2, "INSERT INTO s.a SELECT * FROM s.b", ("s.a", "s.b")),
        ("template", 3, "create_table.sql", ())]


def test_jinja_inside_sql_names_no_table():
    found = one('''SQLExecuteQueryOperator(task_id="j",
        sql="INSERT INTO {{ params.target }} SELECT * FROM s.src WHERE ds = '{{ ds }}'")''')
    assert found.resolved and found.tables == ("s.src",)
    assert found.text.startswith("INSERT INTO {{ params.target }}")  # the text is kept as written


def test_bigquery_insert_job_configuration_query():
    found = one('''
        job = BigQueryInsertJobOperator(task_id="q", configuration={
            "query": {"query": "SELECT x FROM `p.ds.events`", "useLegacySql": False}})
    ''')
    assert (found.call, found.text, found.tables) == \
        ("BigQueryInsertJobOperator(configuration=query)", "SELECT x FROM `p.ds.events`",
         ("ds.events",))


def test_local_string_bound_once_is_followed_and_one_bound_twice_is_not():
    found = refs('''
        T = "plays"
        def job(con, T2):
            q = "SELECT * FROM s." + T
            con.execute(q)
            r = "SELECT 1 FROM s.a"
            r = "SELECT 1 FROM s.b"
            pd.read_sql(r, con)
            for loop in ("x",):
                pd.read_sql(loop, con)
        def shadow(T):
            return spark.table(T)
    ''').findings
    assert [(f.line, f.text, f.resolved) for f in found] == [
        (5, "SELECT * FROM s.plays", True), (8, "", False), (10, "", False)]


def test_generic_call_with_a_name_is_not_sql_but_a_read_sql_one_is_unresolved():
    found = refs('''
        subprocess.run(cmd)
        executor.execute(task)
        pd.read_sql(query, con)
    ''').findings
    assert [(f.call, f.resolved, f.reason) for f in found] == [
        ("pd.read_sql", False, "SQL held in a name bound at run time: query")]


def test_unparsable_sql_still_names_its_dotted_tables():
    found = one('cur.execute("SELECT %(x)s FROM s.t WHERE a = %(y)s")')
    assert found.resolved and found.tables == ("s.t",)


# -- (b) tables read by name ----------------------------------------------------------

@pytest.mark.parametrize("call, code, table", [
    ("spark.table", 'spark.table("a.b")', "a.b"),
    ("spark.read.table", 'spark.read.table("a.b")', "a.b"),
    ("pd.read_sql_table", 'pd.read_sql_table("plays", engine)', "plays"),
    ("pd.read_sql_table", 'pd.read_sql_table("plays", engine, schema="music")', "music.plays"),
    ("con.table", 'con.table("plays")', "plays"),
    ("session.table", 'session.table("DB.SCH.T")', "DB.SCH.T"),
    ("context.table", 'context.table("sushi.orders")', "sushi.orders"),
    ("context.resolve_table", 'context.resolve_table("sushi.orders")', "sushi.orders"),
    ("hook.insert_rows", 'hook.insert_rows(table="Customers", rows=r)', "Customers"),
])
def test_table_read_by_name(call, code, table):
    found = one(code)
    assert (found.kind, found.call, found.text, found.resolved) == ("table", call, table, True)


def test_operator_table_keyword_and_its_columns():
    found = refs('''
        check = SQLColumnCheckOperator(task_id="c", table="s.plays", column_mapping={
            "user_id": {"null_check": {"equal_to": 0}}})
        insert = SQLInsertRowsOperator(task_id="i", table_name="actors", columns=["name", "age"])
    ''')
    assert [(f.kind, f.call, f.text) for f in found.findings] == [
        ("table", "SQLColumnCheckOperator(table=)", "s.plays"),
        ("table", "SQLInsertRowsOperator(table_name=)", "actors")]
    assert [(c.column, c.via, c.source_line) for c in found.columns] == [
        ("user_id", "column_mapping=", 2), ("name", "columns=", 4), ("age", "columns=", 4)]


def test_a_bare_name_given_to_read_sql_is_a_table_read():
    found = refs('pd.read_sql("music.plays", con)\ncon.execute("COMMIT")').findings
    assert [(f.kind, f.text, f.tables) for f in found] == [
        ("table", "music.plays", ()), ("sql", "COMMIT", ())]


def test_table_call_with_a_non_string_argument_is_not_a_finding():
    assert refs("t = con.table(name)\nrows = tbl.table(0)").findings == ()


# -- (c) module constants into f-strings and concatenations ----------------------------

CONSTANTS = '''
DATASET = "analytics"
TABLE = "plays"
FULL = DATASET + "." + TABLE
RUN = f"{DATASET}_{os.environ['ENV']}"
TWICE = "a"
TWICE = "b"

def job(spark, day):
    a = spark.table(f"{DATASET}.{TABLE}")
    b = spark.table(FULL)
    c = spark.sql(f"SELECT * FROM {FULL} WHERE day = '{day}'")
    d = spark.sql("SELECT * FROM " + FULL)
    e = spark.table(f"{RUN}.{TABLE}")
    f = spark.table(TWICE)
'''


def test_constants_followed_into_fstrings_and_concatenations():
    found = refs(CONSTANTS).findings
    assert [(f.line, f.text, f.resolved) for f in found[:2]] == [
        (10, "analytics.plays", True), (11, "analytics.plays", True)]
    d = found[3]
    assert (d.text, d.resolved, d.tables) == ("SELECT * FROM analytics.plays", True,
                                               ("analytics.plays",))
    # The spans are the literals the text came from: the call's own and the constants'.
    assert [literal_at(CONSTANTS, s) for s in d.spans] == ['"analytics"', '"plays"', '"."',
                                                            '"SELECT * FROM "']


def test_runtime_part_is_unresolved_with_its_reason():
    found = refs(CONSTANTS).findings
    c, e = found[2], found[4]
    assert (c.resolved, c.reason, c.tables) == (False, "run-time part {day}", ())
    assert c.text == "SELECT * FROM analytics.plays WHERE day = '{day}'"
    assert (e.resolved, e.reason) == (False, "run-time part {os.environ['ENV']}")
    assert len(found) == 5  # TWICE is bound twice: not a constant, so spark.table(TWICE) is unseen


def test_spans_are_bytes_not_characters():
    code = '# é ü ñ\nduckdb.sql("SELECT 1 FROM s.t")\n'
    found = one(code)
    assert code.encode()[found.spans[0][0]:found.spans[0][1]] == b'"SELECT 1 FROM s.t"'


def test_fstring_escapes_and_braces_are_undone():
    found = one('T = "t"\ncon.sql(f"SELECT \'{{x}}\', \'a\\tb\' FROM s.{T}")')
    assert found.text == "SELECT '{x}', 'a\tb' FROM s.t" and found.resolved


def test_formatted_part_is_unresolved():
    found = one('T = "t"\ncon.sql(f"SELECT * FROM {T!r}")')
    assert (found.resolved, found.reason) == (False, "formatted part {T!r}")


# -- (d) columns after a read in the same function ---------------------------------------

COLUMNS = '''
import pyspark.sql.functions as F
import polars as pl

def pandas_job(engine):
    df = pd.read_sql_table("plays", engine, columns=["user_id", "ms"])
    top = df[df["ms"] > 0][["user_id", "country"]]
    df.ms.sum(), df.groupby("user_id").total  # the second is not the read's own frame
    return df.shape, df.filter(x)

def spark_job(spark):
    plays = spark.read.table("a.plays").where(F.col("ms") > 0)
    return plays.select(pl.col("user_id"))

def hook_job(hook):
    target_fields = ["first_name", "last_name"]
    hook.insert_rows(table="Customers", rows=[], target_fields=target_fields)

def unrelated(other):
    return other["user_id"], F.col("ms")
'''


def test_columns_used_after_a_read_in_the_same_function():
    found = refs(COLUMNS)
    uses = [(c.column, c.via, c.line, c.source_line) for c in found.columns]
    assert uses == [
        ("user_id", "columns=", 6, 6), ("ms", "columns=", 6, 6),
        ("ms", "subscript", 7, 6), ("user_id", "subscript", 7, 6),
        ("country", "subscript", 7, 6),
        ("ms", "attribute", 8, 6),
        ("ms", "col", 12, 12), ("user_id", "col", 13, 12),
        ("first_name", "target_fields=", 16, 17), ("last_name", "target_fields=", 16, 17)]
    for use in found.columns:
        assert literal_at(COLUMNS, use.span).strip('"') == use.column


def test_not_python_is_an_error_not_an_exception():
    found = find_python_refs("def broken(:\n")
    assert found.findings == () and found.error.startswith("does not parse as Python")


def test_deep_nesting_is_refused_before_libcst_which_would_crash_the_process():
    # Without the depth check, 20,000 chained `+` killed the process (a segfault in libcst's
    # native parser) and 500 raised RecursionError from its visitors.
    just_under = find_python_refs("con.sql(" + " + ".join(['"a"'] * 245) + ")\n")
    assert just_under.error is None and just_under.findings[0].text == "a" * 245
    for n in (500, 3_000, 20_000):
        found = find_python_refs("con.sql(" + " + ".join(['"a"'] * n) + ")\n")
        assert found.findings == () and found.error.startswith("nested"), (n, found.error)
    assert find_python_refs("x = " + "(" * 300 + "1" + ")" * 300).error.startswith("does not parse")


def test_material_stays_far_below_the_depth_limit():
    import ast

    from skein.python_refs import MAX_DEPTH, nesting_depth
    deepest = max(nesting_depth(ast.parse(p.read_text(encoding="utf-8")))
                  for _, p in python_material.all_files())
    assert deepest * 5 < MAX_DEPTH, deepest


# -- the public material (tests/material.py) ----------------------------------------------

@pytest.mark.parametrize("tree", python_material.TREES, ids=[t[0] for t in python_material.TREES])
def test_material_parses_and_round_trips_byte_for_byte(tree):
    files = python_material.tree_files(*tree)
    assert files, tree
    for path in files:
        data = path.read_bytes()
        assert cst.parse_module(data).bytes == data, path
        assert find_python_refs(data.decode("utf-8")).error is None, path


def test_sqlite_example_dag():
    path = (material.ensure("apache-airflow-providers-sqlite")
            / "tests/system/sqlite/example_sqlite.py")
    found = find_python_refs(path.read_text())
    summary = [(f.kind, f.call, f.line, f.text.split("(")[0].strip(), f.tables) for f in found.findings]
    assert summary == [
        ("sql", "SQLExecuteQueryOperator(sql=)", 48, "CREATE TABLE Customers", ("customers",)),
        ("table", "sqlite_hook.insert_rows", 67, "Customers", ()),
        ("table", "sqlite_hook.insert_rows", 75, "Customers", ()),
        ("template", "SQLExecuteQueryOperator(sql=)", 80, "create_table.sql", ())]
    assert (path.read_bytes()[slice(*found.findings[0].spans[0])]
            .startswith(b'r"""\n        CREATE TABLE Customers ('))
    assert [(c.column, c.line) for c in found.columns] == [
        ("first_name", 66), ("last_name", 66), ("first_name", 74), ("last_name", 74)]


def bigquery(name: str):
    path = (material.ensure("apache-airflow-providers-google")
            / "tests/system/google/cloud/bigquery" / name)
    return {f.line: f for f in find_python_refs(path.read_text()).findings}


def test_bigquery_fstring_sql_from_module_constants():
    found = bigquery("example_bigquery_queries.py")
    # TABLE_1 and DAG_ID are followed in; ENV_ID is read from the environment at run time.
    save = found[144]
    assert (save.call, save.resolved) == ("BigQueryInsertJobOperator(configuration=query)", False)
    assert save.text == "SELECT * FROM dataset_bigquery_queries_{ENV_ID}.table1"
    assert save.reason == "run-time part {ENV_ID}"
    insert = found[110]
    assert insert.text.startswith("INSERT dataset_bigquery_queries_{ENV_ID}.table1 VALUES ")
    assert "(42, 'monty python', '2030-01-01')" in insert.text
    assert insert.reason.startswith("run-time part {ENV_ID}")
    assert (found[123].kind, found[123].text) == ("template", "{% include QUERY_SQL_PATH %}")


def test_bigquery_to_postgres_resolved_sql():
    found = bigquery("example_bigquery_to_postgres.py")
    assert found[272].resolved and found[272].tables == ("test_table",)
    assert found[272].text == "UPDATE test_table SET salary = salary + 0.5 WHERE salary < 10000.0"


def test_sushi_python_models_read_tables_through_context():
    root = material.ensure("sqlmesh") / "examples/sushi/models"
    reads = {(p.name, f.text) for p in root.glob("*.py")
             for f in find_python_refs(p.read_text()).findings if f.kind == "table"}
    assert reads == {("order_items.py", "sushi.items"), ("order_items.py", "sushi.orders"),
                     ("raw_marketing.py", "sushi.raw_marketing")}


def test_pandas_read_sql_table_calls():
    path = material.ensure("pandas") / "pandas/tests/io/test_sql.py"
    found = find_python_refs(path.read_text())
    tables = {f.line: f.text for f in found.findings if f.kind == "table"}
    assert len(tables) == 64  # 58 read_sql_table (7 through a local name), 6 read_sql of a name
    assert tables[1219] == "iris" and tables[4092] == "public.test_schema_public_explicit"
    # `table = "iris"` bound once in the function: read_sql(table) and read_sql_table(table).
    assert tables[2614] == tables[2615] == "iris"
    by_line = {f.line: f for f in found.findings}
    query = by_line[1673]  # query = 'SELECT * FROM iris_view ...' two lines up
    assert (query.kind, query.tables, query.resolved) == ("sql", ("iris_view",), True)
    assert path.read_bytes()[slice(*query.spans[0])] == \
        b"""'SELECT * FROM iris_view WHERE "SepalLength" < 0.0'"""
    unresolved = {f.line: f.reason for f in found.findings if not f.resolved}
    assert unresolved[560] == "run-time part {table_name}"
    assert unresolved[1211] == "SQL held in a name bound at run time: query"


def test_sqlframe_spark_table_reads_and_columns():
    path = material.ensure("sqlframe") / "tests/integration/engines/duck/test_duckdb_activate.py"
    found = find_python_refs(path.read_text())
    assert [(f.call, f.line, f.text) for f in found.findings if f.kind == "table"] == [
        ("spark.table", 17, "memory.activate_test.test"),
        ("spark.table", 34, "memory.activate_test.test")]


def test_sqlframe_get_df_reads_and_their_columns():
    path = material.ensure("sqlframe") / "tests/integration/test_int_dataframe.py"
    found = find_python_refs(path.read_text())
    reads = {f.line: (f.kind, f.call, f.text) for f in found.findings}
    assert reads[40] == reads[54] == ("table", "get_df", "employee")
    uses = [(c.column, c.via, c.source_line) for c in found.columns if 40 <= c.line < 60]
    # `employee.session` is the frame's session, not a column; SF.col names one.
    assert uses == [("employee_id", "col", 54), ("employee_id", "col", 54)]
