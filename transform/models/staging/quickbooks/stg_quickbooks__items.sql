-- One row per QBO Item, active and inactive, of every item type.
with source as (

    select * from {{ source('quickbooks', 'qb_items_raw') }}

),

fields as (

    select
        cast(id as text) as item_id,
        cast(payload ->> 'SyncToken' as integer) as sync_token,
        cast(payload ->> 'Name' as text) as item_name,
        cast(payload ->> 'FullyQualifiedName' as text) as fully_qualified_name,
        cast(payload ->> 'Sku' as text) as sku,
        cast(payload ->> 'Type' as text) as item_type,
        cast(payload ->> 'Active' as boolean) as is_active,
        cast(payload ->> 'SubItem' as boolean) as is_sub_item,
        cast(payload #>> '{ParentRef,value}' as text) as parent_item_id,
        cast(payload ->> 'Level' as integer) as hierarchy_level,
        cast(payload ->> 'Description' as text) as description,
        cast(payload ->> 'PurchaseDesc' as text) as purchase_description,
        cast(payload ->> 'Taxable' as boolean) as is_taxable,
        cast(payload ->> 'UnitPrice' as numeric) as unit_price,
        cast(payload ->> 'PurchaseCost' as numeric) as purchase_cost,
        cast(payload ->> 'TrackQtyOnHand' as boolean) as is_quantity_tracked,
        cast(payload ->> 'QtyOnHand' as numeric) as quantity_on_hand,
        cast(payload ->> 'ReorderPoint' as numeric) as reorder_point,
        cast(payload ->> 'InvStartDate' as date) as inventory_start_date,
        cast(payload #>> '{IncomeAccountRef,value}' as text) as income_account_id,
        cast(payload #>> '{ExpenseAccountRef,value}' as text) as expense_account_id,
        cast(payload #>> '{AssetAccountRef,value}' as text) as asset_account_id,
        cast(payload #>> '{MetaData,CreateTime}' as timestamptz) as created_at_utc,
        cast(payload #>> '{MetaData,LastUpdatedTime}' as timestamptz) as last_updated_at_utc,
        cast(ingested_at_utc as timestamptz) as ingested_at_utc
    from source

),

final as (

    select * from fields

)

select * from final
