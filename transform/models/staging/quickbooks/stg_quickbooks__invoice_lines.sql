-- One row per element of an Invoice's Line array, in array order. Lines of every
-- detail type are kept: sales items, bundles (groups), descriptions, discounts
-- and the subtotal line QBO appends.
with source as (

    select * from {{ source('quickbooks', 'qb_invoices_raw') }}

),

line_elements as (

    select
        source.id as invoice_id,
        source.ingested_at_utc,
        line.line_index,
        line.element
    from source
    cross join lateral jsonb_array_elements(
        {{ jsonb_array_or_empty("source.payload -> 'Line'") }}
    ) with ordinality as line (element, line_index)

),

fields as (

    select
        cast(invoice_id as text) || '-' || cast(line_index as text) as invoice_line_key,
        cast(invoice_id as text) as invoice_id,
        cast(line_index as integer) as line_index,
        cast(element ->> 'Id' as text) as line_id,
        cast(element ->> 'LineNum' as integer) as line_number,
        cast(element ->> 'DetailType' as text) as detail_type,
        cast(element ->> 'Description' as text) as description,
        cast(element ->> 'Amount' as numeric) as amount,

        -- SalesItemLineDetail
        cast(element #>> '{SalesItemLineDetail,ItemRef,value}' as text) as item_id,
        cast(element #>> '{SalesItemLineDetail,ItemRef,name}' as text) as item_name,
        cast(element #>> '{SalesItemLineDetail,Qty}' as numeric) as quantity,
        cast(element #>> '{SalesItemLineDetail,UnitPrice}' as numeric) as unit_price,
        cast(element #>> '{SalesItemLineDetail,TaxCodeRef,value}' as text) as tax_code_id,
        cast(element #>> '{SalesItemLineDetail,ServiceDate}' as date) as service_date,
        cast(element #>> '{SalesItemLineDetail,ClassRef,value}' as text) as class_id,

        -- GroupLineDetail: a bundle whose component lines sit under it
        cast(element #>> '{GroupLineDetail,GroupItemRef,value}' as text) as group_item_id,
        cast(element #>> '{GroupLineDetail,GroupItemRef,name}' as text) as group_item_name,
        cast(element #>> '{GroupLineDetail,Quantity}' as numeric) as group_quantity,

        -- DiscountLineDetail
        cast(element #>> '{DiscountLineDetail,PercentBased}' as boolean) as is_discount_percent_based,
        cast(element #>> '{DiscountLineDetail,DiscountPercent}' as numeric) as discount_percent,
        cast(element #>> '{DiscountLineDetail,DiscountAccountRef,value}' as text)
            as discount_account_id,

        cast(ingested_at_utc as timestamptz) as ingested_at_utc
    from line_elements

),

final as (

    select * from fields

)

select * from final
