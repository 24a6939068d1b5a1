-- One row per QBO Customer. Inactive customers (QBO's "deleted" ones) and
-- sub-customers (jobs) are kept, and is_active and parent_customer_id tell them apart.
with source as (

    select * from {{ source('quickbooks', 'qb_customers_raw') }}

),

fields as (

    select
        cast(id as text) as customer_id,
        cast(payload ->> 'SyncToken' as integer) as sync_token,
        cast(payload ->> 'DisplayName' as text) as display_name,
        cast(payload ->> 'FullyQualifiedName' as text) as fully_qualified_name,
        cast(payload ->> 'CompanyName' as text) as company_name,
        cast(payload ->> 'Title' as text) as title,
        cast(payload ->> 'GivenName' as text) as given_name,
        cast(payload ->> 'MiddleName' as text) as middle_name,
        cast(payload ->> 'FamilyName' as text) as family_name,
        cast(payload ->> 'Suffix' as text) as suffix,
        cast(payload ->> 'PrintOnCheckName' as text) as print_on_check_name,
        cast(payload ->> 'Active' as boolean) as is_active,
        cast(payload ->> 'Job' as boolean) as is_sub_customer,
        cast(payload #>> '{ParentRef,value}' as text) as parent_customer_id,
        cast(payload ->> 'Level' as integer) as hierarchy_level,
        cast(payload ->> 'BillWithParent' as boolean) as is_billed_with_parent,
        cast(payload ->> 'Taxable' as boolean) as is_taxable,
        cast(payload ->> 'Balance' as numeric) as balance,
        cast(payload ->> 'BalanceWithJobs' as numeric) as balance_with_jobs,
        cast(payload #>> '{CurrencyRef,value}' as text) as currency_code,
        cast(payload ->> 'PreferredDeliveryMethod' as text) as preferred_delivery_method,
        cast(payload #>> '{SalesTermRef,value}' as text) as sales_term_id,
        cast(payload #>> '{PrimaryEmailAddr,Address}' as text) as email,
        cast(payload #>> '{PrimaryPhone,FreeFormNumber}' as text) as phone_number,
        cast(payload #>> '{Mobile,FreeFormNumber}' as text) as mobile_number,
        cast(payload #>> '{Fax,FreeFormNumber}' as text) as fax_number,
        cast(payload #>> '{WebAddr,URI}' as text) as website,
        cast(payload #>> '{BillAddr,Line1}' as text) as billing_address_line_1,
        cast(payload #>> '{BillAddr,City}' as text) as billing_city,
        cast(payload #>> '{BillAddr,CountrySubDivisionCode}' as text) as billing_region,
        cast(payload #>> '{BillAddr,PostalCode}' as text) as billing_postal_code,
        cast(payload #>> '{BillAddr,Country}' as text) as billing_country,
        cast(payload #>> '{ShipAddr,Line1}' as text) as shipping_address_line_1,
        cast(payload #>> '{ShipAddr,City}' as text) as shipping_city,
        cast(payload #>> '{ShipAddr,CountrySubDivisionCode}' as text) as shipping_region,
        cast(payload #>> '{ShipAddr,PostalCode}' as text) as shipping_postal_code,
        cast(payload #>> '{ShipAddr,Country}' as text) as shipping_country,
        cast(payload ->> 'Notes' as text) as notes,
        cast(payload #>> '{MetaData,CreateTime}' as timestamptz) as created_at_utc,
        cast(payload #>> '{MetaData,LastUpdatedTime}' as timestamptz) as last_updated_at_utc,
        cast(ingested_at_utc as timestamptz) as ingested_at_utc
    from source

),

final as (

    select * from fields

)

select * from final
