"""The migrations the parity suite applies to TPC fact tables.

A migration says how the target is built from the source (``forward``: target column ->
expression over source columns; source columns not in ``columns`` are copied as they are)
and how each changed source column is read back from the target (``columns``: the
campaign's mapping, as the rule agent receives it; ``None`` = dropped). Before any query is
compared, the harness checks the migration itself is lossless: reading every kept source
column back through ``columns`` returns the source table exactly, types included. A
mismatch after that is the rewrite's fault, not the migration's.

>>> m = Migration("demo", "main.t", "v2.t", forward={"b2": "b * 2"}, columns={"b": "b2 / 2", "c": None})
>>> m.forward_select(["a", "b", "c"])
'SELECT a, b * 2 AS b2 FROM main.t'
>>> m.backward_select(["a", "b", "c"])
'SELECT a AS a, b2 / 2 AS b FROM v2.t'
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Migration:
    name: str
    source: str  # schema.table, lowercase, as the catalog names it
    target: str
    forward: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str | None] = field(default_factory=dict)
    # Queries that must escalate (they read a dropped column); every other query that
    # reads the source must be rewritten.
    expected_escalations: frozenset[str] = frozenset()
    what: str = ""

    def forward_select(self, source_columns: list[str]) -> str:
        kept = [c for c in source_columns if c not in self.columns]
        items = kept + [f"{expr} AS {name}" for name, expr in self.forward.items()]
        return f"SELECT {', '.join(items)} FROM {self.source}"

    def backward_select(self, source_columns: list[str]) -> str:
        items = [f"{self.columns.get(c, c)} AS {c}" for c in source_columns
                 if self.columns.get(c, c) is not None]
        return f"SELECT {', '.join(items)} FROM {self.target}"

    @property
    def table_name(self) -> str:
        return self.source.split(".")[-1]


# --- TPC-H --------------------------------------------------------------------------------

LINEITEM_RENAMES = {"l_extendedprice": "extended_price", "l_quantity": "quantity",
                    "l_shipdate": "ship_date", "l_returnflag": "return_flag",
                    "l_suppkey": "supplier_key", "l_partkey": "part_key"}
LINEITEM_RETYPES = {
    # BIGINT key stored as text, read back with a cast
    "l_orderkey": ("order_key", "CAST(l_orderkey AS VARCHAR)", "CAST(order_key AS BIGINT)"),
    # DECIMAL(15,2) stored as text
    "l_tax": ("tax_text", "CAST(l_tax AS VARCHAR)", "CAST(tax_text AS DECIMAL(15,2))"),
    # DECIMAL(15,2) fraction stored as an integer percentage
    "l_discount": ("discount_pct", "CAST(l_discount * 100 AS INTEGER)",
                   "CAST(discount_pct / 100 AS DECIMAL(15,2))"),
}


def _renames(mapping: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    return {new: old for old, new in mapping.items()}, dict(mapping)


def _retypes(mapping: dict[str, tuple[str, str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    return ({new: fwd for new, fwd, _ in mapping.values()},
            {old: back for old, (_, _, back) in mapping.items()})


def _recompute_lineitem(ship_date: str) -> tuple[dict[str, str], dict[str, str | None]]:
    forward = {"receipt_lag_days": "CAST(l_receiptdate - l_shipdate AS INTEGER)"}
    columns: dict[str, str | None] = {
        # TPC-H: a line is open ('O') when it ships after the current date 1995-06-17
        "l_linestatus": f"CASE WHEN {ship_date} > DATE '1995-06-17' THEN 'O' ELSE 'F' END",
        "l_receiptdate": f"{ship_date} + receipt_lag_days",
        "l_comment": None,  # dropped: no TPC-H query reads it
    }
    return forward, columns


def _lineitem_all() -> Migration:
    fwd_r, cols_r = _renames(LINEITEM_RENAMES)
    fwd_t, cols_t = _retypes(LINEITEM_RETYPES)
    fwd_c, cols_c = _recompute_lineitem("ship_date")
    return Migration("lineitem-all", "main.lineitem", "tpch_v2.lineitem",
                     forward={**fwd_r, **fwd_t, **fwd_c}, columns={**cols_r, **cols_t, **cols_c},
                     what="move, rename 6, retype 3 with a cast back, recompute 2, drop 1")


TPCH: tuple[Migration, ...] = (
    Migration("lineitem-move-rename", "main.lineitem", "tpch_v2.lineitem",
              *_renames(LINEITEM_RENAMES), what="move to another schema, rename 6 columns"),
    Migration("lineitem-retype", "main.lineitem", "main.lineitem_v2", *_retypes(LINEITEM_RETYPES),
              what="rename the table, 3 columns change type and are cast back"),
    Migration("lineitem-recompute", "main.lineitem", "main.lineitem_v2",
              *_recompute_lineitem("l_shipdate"),
              what="recompute l_linestatus and l_receiptdate from other columns, drop l_comment"),
    _lineitem_all(),
    Migration("orders-v2", "main.orders", "sales.orders",
              forward={"customer_key": "o_custkey", "order_priority": "o_orderpriority",
                       "total_price": "CAST(o_totalprice AS VARCHAR)",
                       "ordered_at": "CAST(o_orderdate AS TIMESTAMP) + INTERVAL 9 HOUR"},
              columns={"o_custkey": "customer_key", "o_orderpriority": "order_priority",
                       "o_totalprice": "CAST(total_price AS DECIMAL(15,2))",
                       "o_orderdate": "CAST(ordered_at AS DATE)", "o_clerk": None},
              what="move, rename 2, retype 1, recompute o_orderdate from a timestamp, drop o_clerk"),
    Migration("orders-drop-comment", "main.orders", "main.orders_v2",
              columns={"o_comment": None}, expected_escalations=frozenset({"q13"}),
              what="drop o_comment: the one query reading it must escalate"),
)


# --- TPC-DS -------------------------------------------------------------------------------

STORE_SALES_RENAMES = {"ss_sold_date_sk": "sold_date_sk", "ss_item_sk": "item_sk",
                       "ss_customer_sk": "customer_sk", "ss_store_sk": "store_sk",
                       "ss_ext_sales_price": "ext_sales_price", "ss_ticket_number": "ticket_number"}
STORE_SALES_RETYPES = {
    "ss_quantity": ("quantity_text", "CAST(ss_quantity AS VARCHAR)", "CAST(quantity_text AS INTEGER)"),
    "ss_net_profit": ("net_profit_cents", "CAST(ss_net_profit * 100 AS BIGINT)",
                      "CAST(net_profit_cents / 100 AS DECIMAL(7,2))"),
    "ss_sales_price": ("sales_price", "CAST(ss_sales_price AS DOUBLE)",
                       "CAST(sales_price AS DECIMAL(7,2))"),
}
WEB_SALES_RENAMES = {"ws_sold_date_sk": "sold_date_sk", "ws_item_sk": "item_sk",
                     "ws_bill_customer_sk": "bill_customer_sk", "ws_order_number": "order_number",
                     "ws_ext_sales_price": "ext_sales_price"}
WEB_SALES_RETYPES = {
    "ws_net_paid": ("net_paid_cents", "CAST(ws_net_paid * 100 AS BIGINT)",
                    "CAST(net_paid_cents / 100 AS DECIMAL(7,2))"),
    "ws_quantity": ("quantity", "CAST(ws_quantity AS BIGINT)", "CAST(quantity AS INTEGER)"),
}


def _merge(*parts: tuple[dict, dict]) -> tuple[dict, dict]:
    forward, columns = {}, {}
    for f, c in parts:
        forward.update(f)
        columns.update(c)
    return forward, columns


TPCDS: tuple[Migration, ...] = (
    Migration("store_sales-move-rename", "main.store_sales", "tpcds_v2.store_sales",
              *_renames(STORE_SALES_RENAMES), what="move to another schema, rename 6 columns"),
    Migration("store_sales-retype", "main.store_sales", "main.store_sales_v2",
              *_retypes(STORE_SALES_RETYPES),
              what="rename the table, 3 columns change type (text, cents, double) and are cast back"),
    Migration("store_sales-all", "main.store_sales", "tpcds_v2.store_sales_fact",
              *_merge(_renames(STORE_SALES_RENAMES), _retypes(STORE_SALES_RETYPES)),
              what="move and rename the table, rename 6 columns, retype 3"),
    Migration("web_sales-all", "main.web_sales", "web.sales",
              *_merge(_renames(WEB_SALES_RENAMES), _retypes(WEB_SALES_RETYPES)),
              what="move and rename the table, rename 5 columns, retype 2"),
)

MIGRATIONS = {"tpch": TPCH, "tpcds": TPCDS}
