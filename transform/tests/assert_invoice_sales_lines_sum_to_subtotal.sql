-- Returns the invoices whose sales lines do not add up to their subtotal line.
-- Sales lines are SalesItemLineDetail lines and GroupLineDetail (bundle) lines,
-- whose Amount is the sum of the bundle's components. QBO appends the subtotal
-- line after them; discount and tax come after the subtotal.
-- NOTE: subtotal lines that a user inserts between sales lines are ignored;
-- only the last SubTotalLineDetail line of an invoice is compared.
with lines as (

    select * from {{ ref('stg_quickbooks__invoice_lines') }}

),

sales as (

    select
        invoice_id,
        sum(amount) as sales_amount
    from lines
    where detail_type in ('SalesItemLineDetail', 'GroupLineDetail')
    group by invoice_id

),

last_subtotal as (

    select distinct on (invoice_id)
        invoice_id,
        line_index,
        amount as subtotal_amount
    from lines
    where detail_type = 'SubTotalLineDetail'
    order by invoice_id, line_index desc

)

select
    last_subtotal.invoice_id,
    last_subtotal.line_index as subtotal_line_index,
    last_subtotal.subtotal_amount,
    coalesce(sales.sales_amount, 0) as sales_amount
from last_subtotal
left join sales
    on sales.invoice_id = last_subtotal.invoice_id
where coalesce(sales.sales_amount, 0) <> last_subtotal.subtotal_amount
