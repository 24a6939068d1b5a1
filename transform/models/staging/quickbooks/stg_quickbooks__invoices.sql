-- One row per QBO Invoice, typed from the raw payload. Voided invoices stay in
-- the model with is_voided = true.
with source as (

    select * from {{ source('quickbooks', 'qb_invoices_raw') }}

),

fields as (

    select
        cast(id as text) as invoice_id,
        cast(payload ->> 'DocNumber' as text) as doc_number,
        cast(payload ->> 'SyncToken' as integer) as sync_token,
        cast(payload ->> 'TxnDate' as date) as transaction_date,
        cast(payload ->> 'DueDate' as date) as due_date,
        cast(payload #>> '{CustomerRef,value}' as text) as customer_id,
        cast(payload #>> '{CustomerRef,name}' as text) as customer_name,
        cast(payload #>> '{CurrencyRef,value}' as text) as currency_code,
        cast(payload ->> 'ExchangeRate' as numeric) as exchange_rate,
        cast(payload ->> 'TotalAmt' as numeric) as total_amount,
        cast(payload ->> 'HomeTotalAmt' as numeric) as home_total_amount,
        cast(payload ->> 'Balance' as numeric) as balance,
        cast(payload ->> 'Deposit' as numeric) as deposit,
        cast(payload #>> '{TxnTaxDetail,TotalTax}' as numeric) as total_tax,
        cast(payload #>> '{TxnTaxDetail,TxnTaxCodeRef,value}' as text) as tax_code_id,
        cast(payload ->> 'ApplyTaxAfterDiscount' as boolean) as is_tax_applied_after_discount,
        cast(payload #>> '{SalesTermRef,value}' as text) as sales_term_id,
        cast(payload #>> '{ClassRef,value}' as text) as class_id,
        cast(payload #>> '{DepartmentRef,value}' as text) as department_id,
        cast(payload ->> 'PrintStatus' as text) as print_status,
        cast(payload ->> 'EmailStatus' as text) as email_status,
        cast(payload #>> '{BillEmail,Address}' as text) as bill_email,
        cast(payload #>> '{BillAddr,Id}' as text) as billing_address_id,
        cast(payload #>> '{ShipAddr,Id}' as text) as shipping_address_id,
        cast(payload ->> 'PrivateNote' as text) as private_note,
        cast(payload #>> '{CustomerMemo,value}' as text) as customer_memo,
        cast(jsonb_array_length({{ jsonb_array_or_empty("payload -> 'Line'") }}) as integer)
            as line_count,
        cast(payload #>> '{MetaData,CreateTime}' as timestamptz) as created_at_utc,
        cast(payload #>> '{MetaData,LastUpdatedTime}' as timestamptz) as last_updated_at_utc,
        cast(ingested_at_utc as timestamptz) as ingested_at_utc,
        cast(extract_window_start_utc as timestamptz) as extract_window_start_utc,
        cast(extract_window_end_utc as timestamptz) as extract_window_end_utc
    from source

),

final as (

    select
        *,
        -- Voiding an invoice in QBO keeps it, zeroes its amounts and prepends
        -- "Voided" to PrivateNote, so the flag reads that note.
        -- NOTE: a private note that a user starts with "Voided" also matches.
        coalesce(private_note ilike 'voided%', false) as is_voided
    from fields

)

select * from final
